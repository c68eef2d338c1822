-- Store a batch of events atomically, each with its indexes and outbox entries.
--
-- KEYS[1..9]: seq, ids, events, by_time, indexes, outbox:push, outbox:forward,
--             conflicts, duplicates
-- KEYS[10..]:  for each event, its index zsets (event type, then tenant and
--             resource when known), as many as the event's nkeys says
-- ARGV[1]: "1" to write push outbox entries, ARGV[2]: "1" for forward
-- ARGV[3..]: per event: message_id, digest, event_type, timestamp ms, nkeys,
--            forward ("1"/"0"), body
--
-- Returns, per event, a pair {status, seq}: 1 stored, 2 already stored with
-- the same body, 3 message_id already stored with a different body.
-- An outbox entry is its seq in two zsets: <outbox> scored by when it is due
-- (see outbox.py) and <outbox>:seqs scored by seq (oldest pending, retention).
-- Sequence numbers are taken inside the script, so a reader never sees seq
-- N+1 in an index before seq N is in every index it belongs to.

local seq_key, ids, events, by_time, indexes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local push_outbox, forward_outbox, conflicts, duplicates = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local push_on = ARGV[1] == "1"
local forward_on = ARGV[2] == "1"

local now = redis.call("TIME")
local now_ms = tostring(now[1] * 1000 + math.floor(now[2] / 1000))

-- Sorted-set entries are gathered per key and added with one ZADD per key at
-- the end: a batch touches far fewer keys than it has events.
local zadds, zadd_keys, index_keys = {}, {}, {}
local function zadd_later(key, score, member)
  local pairs_of_key = zadds[key]
  if not pairs_of_key then
    pairs_of_key = {}
    zadds[key] = pairs_of_key
    zadd_keys[#zadd_keys + 1] = key
  end
  pairs_of_key[#pairs_of_key + 1] = score
  pairs_of_key[#pairs_of_key + 1] = member
end

local results = {}
local k = 10
local a = 3
while a <= #ARGV do
  local message_id, digest, event_type = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local ts_ms, nkeys, forward, body = ARGV[a + 3], tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6]
  a = a + 7

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
    redis.call("XADD", events, id, "t", now_ms, "e", event_type, "m", message_id, "d", body)
    zadd_later(by_time, ts_ms, seq)
    for i = k, k + nkeys - 1 do
      if not zadds[KEYS[i]] then
        index_keys[#index_keys + 1] = KEYS[i]
      end
      zadd_later(KEYS[i], seq, seq)
    end
    -- Zero-padded members, so entries due in the same ms come out in seq order.
    local member = string.format("%015d", seq)
    if push_on then
      zadd_later(push_outbox, now_ms, member)
      zadd_later(push_outbox .. ":seqs", seq, member)
    end
    if forward_on and forward == "1" then
      zadd_later(forward_outbox, now_ms, member)
      zadd_later(forward_outbox .. ":seqs", seq, member)
    end
    results[#results + 1] = {1, seq}
  end
  k = k + nkeys
end

for _, key in ipairs(zadd_keys) do
  local args = zadds[key]
  -- unpack() is limited to a few thousand values; 7000 is even, so pairs stay whole.
  for i = 1, #args, 7000 do
    redis.call("ZADD", key, unpack(args, i, math.min(i + 6999, #args)))
  end
end
for _, key in ipairs(index_keys) do
  redis.call("SADD", indexes, key)
end
return results
