-- Take up to ARGV[2] due entries of an outbox and lease them for ARGV[1] ms.
-- KEYS[1]: the outbox's due zset.  A leased entry is due again when the lease
-- ends, so a worker that dies holding it loses nothing: another takes it over.
local now = redis.call("TIME")
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now_ms, "LIMIT", 0, tonumber(ARGV[2]))
for _, seq in ipairs(due) do
  redis.call("ZADD", KEYS[1], "XX", now_ms + tonumber(ARGV[1]), seq)
end
return due
