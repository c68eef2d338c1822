-- The state of one feed, enough to answer a conditional request without
-- reading any event: newest and oldest seq, when the newest was ingested,
-- and Redis' clock.
--
-- KEYS[1]: the feed's index (zset, member = score = seq, or the events
-- stream), KEYS[2]: the events stream. ARGV[1]: "zset" or "stream".
-- Returns {newest seq, oldest seq, newest ingest ms, now ms}; 0s when empty.

local index, events, kind = KEYS[1], KEYS[2], ARGV[1]
local now = redis.call("TIME")
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local newest, oldest
if kind == "stream" then
  local last = redis.call("XREVRANGE", events, "+", "-", "COUNT", 1)[1]
  local first = redis.call("XRANGE", events, "-", "+", "COUNT", 1)[1]
  newest = last and tonumber(string.sub(last[1], 1, -3))
  oldest = first and tonumber(string.sub(first[1], 1, -3))
else
  newest = tonumber(redis.call("ZREVRANGE", index, 0, 0)[1])
  oldest = tonumber(redis.call("ZRANGE", index, 0, 0)[1])
end
if not newest then
  return {0, 0, 0, now_ms}
end
local entry = redis.call("XRANGE", events, newest .. "-0", newest .. "-0")[1]
local ingested = 0
if entry then
  for i = 1, #entry[2], 2 do
    if entry[2][i] == "t" then
      ingested = tonumber(entry[2][i + 1])
    end
  end
end
return {newest, oldest, ingested, now_ms}
