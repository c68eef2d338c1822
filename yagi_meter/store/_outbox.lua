-- Library (scripts.py): every write an outbox's keys get from a script, and its floor.
-- outbox.py owns these keys (keys.py); ingest.lua, fanout.lua and the retention scripts include this
-- file rather than write them themselves.  An outbox entry is its member in
-- two zsets, <due> scored by the ms it is next due and <seqs> scored by seq
-- (oldest pending, retention floor), and a count of failed attempts in the
-- <attempts> hash.  The member format is outbox.py's MEMBER_FORMAT, passed in.

local function outbox_add(due, seqs, member, seq, due_ms)
  redis.call("ZADD", due, due_ms, member)
  redis.call("ZADD", seqs, seq, member)
end

local function outbox_done(due, seqs, attempts, member)
  redis.call("ZREM", due, member)
  redis.call("ZREM", seqs, member)
  redis.call("HDEL", attempts, member)
end

-- The lowest seq any of the outboxes' <seqs> zsets KEYS[first..last] still
-- holds (nil when all are empty): events from it on are still to be worked.
local function outbox_floor(first, last)
  local floor = nil
  for i = first, last do
    local head = redis.call("ZRANGE", KEYS[i], 0, 0, "WITHSCORES")
    if head[2] then
      local seq = tonumber(head[2])
      if not floor or seq < floor then
        floor = seq
      end
    end
  end
  return floor
end
