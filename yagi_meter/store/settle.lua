-- Record the outcome of one delivery attempt to a subscription and schedule its next one.
--
-- KEYS[1..5]: hub:sub:<id>, hub:queue:<id>, hub:due, hub:failures, hub:dropped
-- ARGV[1]: subscription id, ARGV[2]: "ok", "retry" or "drop",
-- ARGV[3]: retry delay in ms, ARGV[4..]: the seqs the attempt carried
--
-- ok and drop take the seqs off the queue; the subscription is due again at
-- once when more wait, else it leaves the due set.  Done here, atomically,
-- because fan-out only marks a subscription due when it is not already
-- (ZADD NX): checking the queue and leaving the due set in two steps could
-- strand an entry that arrived in between.
local sub, queue, due, failures, dropped = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, outcome, delay_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = redis.call("TIME")
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)

if redis.call("EXISTS", sub) == 0 then
  -- Unsubscribed or expired while the attempt was under way.
  redis.call("DEL", queue)
  redis.call("ZREM", due, id)
  return 0
end
local seqs = {}
for i = 4, #ARGV do
  seqs[#seqs + 1] = ARGV[i]
end
if outcome ~= "ok" then
  redis.call("INCR", failures)
  redis.call("HINCRBY", sub, "failures", 1)
end
if outcome == "retry" then
  redis.call("HINCRBY", sub, "attempts", 1)
  redis.call("HSETNX", sub, "first_failure", now_ms)
  redis.call("ZADD", due, now_ms + delay_ms, id)
  return 1
end
if #seqs > 0 then
  redis.call("ZREM", queue, unpack(seqs))
end
if outcome == "drop" then
  redis.call("INCRBY", dropped, #seqs)
  redis.call("HINCRBY", sub, "dropped", #seqs)
end
redis.call("HDEL", sub, "attempts", "first_failure")
if redis.call("ZCARD", queue) > 0 then
  redis.call("ZADD", due, now_ms, id)
else
  redis.call("ZREM", due, id)
end
return 1
