-- Library (scripts.py): every write an outbox's keys get from a script.
-- outbox.py owns these keys (keys.py); ingest.lua and fanout.lua include this
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
