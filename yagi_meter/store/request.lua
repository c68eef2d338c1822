-- Queue a subscription intent unless its client or its topic already has too many
-- waiting for verification.  Returns 1 queued, 0 refused (a limit), -1 the intent
-- hash changed since the caller read it (the caller reads again and retries).
-- KEYS[1] hub:intent:<id>   KEYS[2] hub:intents
-- KEYS[3] the client's pending zset   KEYS[4] the topic's pending zset
-- KEYS[5], KEYS[6] the pending zsets of the intent this one replaces (or 3 and 4)
-- ARGV[1] id  ARGV[2] now ms  ARGV[3] max per client  ARGV[4] max per topic
-- ARGV[5] nonce of the replaced intent ("" when none)  ARGV[6] max in all
-- ARGV[7..] field, value...
local id = ARGV[1]
if (redis.call("HGET", KEYS[1], "nonce") or "") ~= ARGV[5] then
  return -1
end
-- A replacement already counted in the same zset does not count twice.
local function full(key, max)
  return not redis.call("ZSCORE", key, id) and redis.call("ZCARD", key) >= tonumber(max)
end
if full(KEYS[3], ARGV[3]) or full(KEYS[4], ARGV[4]) or full(KEYS[2], ARGV[6]) then
  return 0
end
redis.call("ZREM", KEYS[5], id)
redis.call("ZREM", KEYS[6], id)
redis.call("ZADD", KEYS[3], ARGV[2], id)
redis.call("ZADD", KEYS[4], ARGV[2], id)
redis.call("DEL", KEYS[1])
redis.call("HSET", KEYS[1], unpack(ARGV, 7))
-- NX: an intent being verified right now keeps its lease; finish_intent sees
-- the new nonce and makes it due again.
redis.call("ZADD", KEYS[2], "NX", ARGV[2], id)
return 1
