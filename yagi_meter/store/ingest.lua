-- Store a batch atomically: each event with its indexes and outbox entries,
-- each rejected message in the quarantine, and remove requeued quarantine
-- entries.  One EVALSHA is one round trip and one atomic step.
-- events.py owns the event keys written here; the outbox and quarantine keys
-- are written only through their owners' libraries (keys.py).
--
-- KEYS[1..15]: seq, ids, events, by_time, indexes, outbox:push, outbox:push:seqs,
--              outbox:forward, outbox:forward:seqs, conflicts, duplicates,
--              quarantine, quarantine:count, quarantine:digests, epoch
-- KEYS[16..]:  for each event, its index zsets (event type, then tenant and
--              resource when known), as many as the event's nkeys says
-- ARGV[1]: "1" to write push outbox entries; ARGV[2]: number of events;
-- ARGV[3]: number of rejected messages; ARGV[4]: quarantine entry time (ms)
-- ARGV[5]: a fresh random store epoch, used when seq does not exist or went back
-- ARGV[6], ARGV[7]: the epoch and the highest seq the writer saw before ("" and 0
--          when none): a seq now lower under that same epoch means Redis lost
--          writes (RDB restore, lagging replica) and seqs would be given out again
-- ARGV[8]: the outbox member format (outbox.py MEMBER_FORMAT)
-- then per event (8): message_id, digest, event_type, timestamp ms, nkeys,
--                     forward ("1"/"0"), body, user_id ("" for none; entries
--                     written before it have no "u" field)
-- then per rejected message (6): reason, source, body, sha256 of the whole
--                     raw message, its size in bytes, "1" when body is only its head
-- then the quarantine entry ids to remove (requeued messages)
--
-- Returns {results, repeats, epoch, seq}: results has, per event, a pair
-- {status, seq}: 1 stored, 2 already stored with the same body, 3 message_id
-- already stored with a different body; repeats: rejected messages whose
-- sha256 was already in the quarantine (counted as duplicates, not added
-- again); epoch and seq: the store's epoch and last seq after the write.
-- The epoch is created with seq, in this script: when Redis loses seq (no
-- persistence, FLUSHDB, ...) sequence numbers start again at 1 under a new
-- epoch, so nothing keyed by (epoch, seq) can mistake new events for old.
-- An outbox entry is its member in two zsets (_outbox.lua, outbox.py).
-- Sequence numbers are taken inside the script, so a reader never sees seq
-- N+1 in an index before seq N is in every index it belongs to.
-- include: _outbox.lua
-- include: _quarantine.lua

local seq_key, ids, events, by_time, indexes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local push_outbox, push_seqs, forward_outbox, forward_seqs = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local conflicts, duplicates = KEYS[10], KEYS[11]
local quarantine, quarantine_count, quarantine_digests, epoch_key = KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local push_on = ARGV[1] == "1"
local member_format = ARGV[8]
local n_events, n_rejected = tonumber(ARGV[2]), tonumber(ARGV[3])

local now = redis.call("TIME")
local now_ms = tostring(now[1] * 1000 + math.floor(now[2] / 1000))

-- A new epoch before any seq is given out again, in the same atomic step:
-- no reader ever sees a reused seq under the epoch it had with its old event.
local current_seq = redis.call("GET", seq_key)
if not current_seq then
  redis.call("SET", epoch_key, ARGV[5])
elseif ARGV[6] ~= "" and redis.call("GET", epoch_key) == ARGV[6] and tonumber(current_seq) < tonumber(ARGV[7]) then
  redis.call("SET", epoch_key, ARGV[5])
else
  redis.call("SET", epoch_key, ARGV[5], "NX")  -- a store written before epochs existed
end

-- Requeued entries go first, with their digests: a message still bad is
-- then quarantined anew instead of being taken for a repeat.
for i = 9 + n_events * 8 + n_rejected * 6, #ARGV do
  quarantine_remove(quarantine, quarantine_digests, ARGV[i])
end

local results = {}
local indexed = {}
local k = 16
local a = 9
for _ = 1, n_events do
  local message_id, digest, event_type = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local ts_ms, nkeys, forward, body = ARGV[a + 3], tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6]
  local user = ARGV[a + 7]
  a = a + 8

  local known = redis.call("HGET", ids, message_id)
  if known then
    local space = string.find(known, " ", 1, true)
    local old_seq = tonumber(string.sub(known, 1, space - 1))
    if string.sub(known, space + 1) == digest then
      redis.call("INCR", duplicates)
      results[#results + 1] = {2, old_seq}
    else
      redis.call("INCR", conflicts)
      results[#results + 1] = {3, old_seq}
    end
  else
    local seq = redis.call("INCR", seq_key)
    local id = seq .. "-0"
    redis.call("HSET", ids, message_id, seq .. " " .. digest)
    -- "e" and "u": what page.lua filters on without decoding the body.  Every
    -- entry has "u" (empty without a user): a stream stores the field names
    -- once for entries that all have the same ones.
    redis.call("XADD", events, id, "t", now_ms, "e", event_type, "m", message_id, "d", body, "u", user)
    redis.call("ZADD", by_time, ts_ms, seq)
    for i = k, k + nkeys - 1 do
      redis.call("ZADD", KEYS[i], seq, seq)
      if not indexed[KEYS[i]] then  -- once per index per batch is enough
        redis.call("SADD", indexes, KEYS[i])
        indexed[KEYS[i]] = true
      end
    end
    -- Zero-padded members, so entries due in the same ms come out in seq order.
    local member = string.format(member_format, seq)
    if push_on then
      outbox_add(push_outbox, push_seqs, member, seq, now_ms)
    end
    if forward == "1" then
      outbox_add(forward_outbox, forward_seqs, member, seq, now_ms)
    end
    results[#results + 1] = {1, seq}
  end
  k = k + nkeys
end

local repeats = 0
for _ = 1, n_rejected do
  local added = quarantine_add(quarantine, quarantine_count, quarantine_digests, ARGV[4],
                               ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
  if not added then
    -- The same raw message again (redelivery after a crash, a second replay).
    redis.call("INCR", duplicates)
    repeats = repeats + 1
  end
  a = a + 6
end

return {results, repeats, redis.call("GET", epoch_key), tonumber(redis.call("GET", seq_key) or "0")}
