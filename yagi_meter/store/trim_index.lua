-- Remove index entries up to a sequence number; forget the index once empty.
-- KEYS[1]: the index zset, KEYS[2]: the set of index names. ARGV[1]: last seq to remove.
-- Atomic, so an index written to meanwhile is never dropped from the set.
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])
if redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[2], KEYS[1])
end
return 1
