-- Store a batch of one partition atomically: each event with its indexes
-- and outbox entries.  One EVALSHA is one round trip and one atomic step.
-- events.py owns the event keys written here; the outbox keys are written
-- only through their owner's library (keys.py).  Rejected messages go to
-- the quarantine in a call of their own (quarantine.lua, another slot).
--
-- KEYS[1..10]: seq, ids, events, outbox:push, outbox:push:seqs,
--              outbox:forward, outbox:forward:seqs, conflicts, duplicates, epoch
-- KEYS[11..]:  for each event, its index zsets (event type, then tenant and
--              resource when known), as many as the event's nkeys says;
--              then for each catalog entry its zset and its stats hash
-- ARGV[1]: "1" to write push outbox entries; ARGV[2]: number of events
-- ARGV[3]: a fresh random store epoch, used when seq does not exist or went back
-- ARGV[4], ARGV[5]: the epoch and the highest seq the writer saw before ("" and 0
--          when none): a seq now lower under that same epoch means Redis lost
--          writes (RDB restore, lagging replica) and seqs would be given out again
-- ARGV[6]: the outbox member format (outbox.py MEMBER_FORMAT)
-- ARGV[7]: "1" when the events are conflicting copies (notification.conflict_copy):
--          each one stored counts in conflicts
-- ARGV[8]: number of catalog entries, then each entry's member (a tenant,
--           resource or event type; its keys are the entry's pair in KEYS)
-- then per event (11): message_id, digest, event_type, timestamp ms, nkeys,
--                     forward ("1"/"0"), body, user_id ("" for none; entries
--                     written before it have no "u" field), the numbers
--                     (1-based, space separated) of its catalog entries, its
--                     merge order ("" for none: one partition; pages.py), and
--                     its ingest time in ms ("" for this master's clock, as
--                     always but for `yagi-meter copy`, which keeps the time
--                     an event was first stored)
--
-- Returns {results, epoch, seq}: results has, per event, a pair
-- {status, seq}: 1 stored, 2 already stored with the same body, 3 message_id
-- already stored with a different body (nothing stored, nothing counted: the
-- caller stores that body in a second call, as a conflicting copy); epoch
-- and seq: the partition's epoch and last seq after the write.
-- The epoch is created with seq, in this script: when Redis loses seq (no
-- persistence, FLUSHDB, ...) sequence numbers start again at 1 under a new
-- epoch, so nothing keyed by (epoch, seq) can mistake new events for old.
-- An outbox entry is its member in two zsets (_outbox.lua, outbox.py).
-- Sequence numbers are taken inside the script, so a reader never sees seq
-- N+1 in an index before seq N is in every index it belongs to.
-- include: _outbox.lua
-- include: _order.lua

local seq_key, ids, events = KEYS[1], KEYS[2], KEYS[3]
local push_outbox, push_seqs, forward_outbox, forward_seqs = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local conflicts, duplicates, epoch_key = KEYS[8], KEYS[9], KEYS[10]
local push_on = ARGV[1] == "1"
local member_format = ARGV[6]
local copies = ARGV[7] == "1"
local n_catalog = tonumber(ARGV[8])
local n_events = tonumber(ARGV[2])

local now = redis.call("TIME")
local now_ms = tostring(now[1] * 1000 + math.floor(now[2] / 1000))

-- A new epoch before any seq is given out again, in the same atomic step:
-- no reader ever sees a reused seq under the epoch it had with its old event.
local current_seq = redis.call("GET", seq_key)
if not current_seq then
  redis.call("SET", epoch_key, ARGV[3])
elseif ARGV[4] ~= "" and redis.call("GET", epoch_key) == ARGV[4] and tonumber(current_seq) < tonumber(ARGV[5]) then
  redis.call("SET", epoch_key, ARGV[3])
else
  redis.call("SET", epoch_key, ARGV[3], "NX")  -- a store written before epochs existed
end

-- A partition's merge orders grow with its seqs (cut.lua's binary search and
-- the merge of pages.py rely on it): an order at or below the last one stored
-- (two batches in one ms, another writer's clock behind this one's) is raised
-- just past it.  The last one is read once per call, from the newest entry
-- (_order.lua).  And no order is more than 100 ms past this master's clock:
-- a writer whose clock is ahead would otherwise put its events, and the
-- partition's after them, that far in the future (within 100 ms: a writer's
-- orders run ahead of its clock only by what it writes beyond 1,000 events a
-- ms, partitions.batch_order, and hosts' clocks differ by a few ms); a later
-- one is moved to that ms, keeping its place in its batch (this call's part
-- of it: another partition's call has a ms of its own).
local latest_ms = tonumber(now_ms) + 100
local last_order = nil
local function growing(order)
  if last_order == nil then
    last_order = 0
    local newest = redis.call("XREVRANGE", events, "+", "-", "COUNT", 1)[1]
    if newest then
      last_order = merge_order(newest[2])
    end
  end
  local wanted = tonumber(order)
  if wanted >= (latest_ms + 1) * 1000 then
    wanted = latest_ms * 1000 + wanted % 1000
  end
  last_order = math.max(wanted, last_order + 1)
  return string.format("%d", last_order)
end

local results = {}
local catalog = {}  -- entry number -> {events stored, newest ms}, written once per batch
local k = 11
local a = 9 + n_catalog
for _ = 1, n_events do
  local message_id, digest, event_type = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local ts_ms, nkeys, forward, body = ARGV[a + 3], tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6]
  local user = ARGV[a + 7]
  local entries = ARGV[a + 8]
  local order = ARGV[a + 9]
  local ingested_ms = ARGV[a + 10]
  if ingested_ms == "" then
    ingested_ms = now_ms
  end
  a = a + 11

  local known = redis.call("HGET", ids, message_id)
  if known then
    local space = string.find(known, " ", 1, true)
    local old_seq = tonumber(string.sub(known, 1, space - 1))
    if string.sub(known, space + 1) == digest then
      redis.call("INCR", duplicates)
      results[#results + 1] = {2, old_seq}
    else
      results[#results + 1] = {3, old_seq}
    end
  else
    local seq = redis.call("INCR", seq_key)
    local id = seq .. "-0"
    redis.call("HSET", ids, message_id, seq .. " " .. digest)
    -- "e" and "u": what page.lua filters on without decoding the body.  Every
    -- entry has "u" (empty without a user): a stream stores the field names
    -- once for entries that all have the same ones.
    -- "n": the notification's time (ms), what start/end select on; stores
    -- written before it kept that in by_time, which page.lua still reads.
    -- "o" (partitions only): where the merged feeds put it, the writer's batch
    -- time and the event's place in its batch, so one batch's events interleave
    -- (raised past the partition's last one when not above it: growing).
    if order == "" then
      redis.call("XADD", events, id, "t", ingested_ms, "e", event_type, "m", message_id, "d", body, "u", user,
                 "n", ts_ms)
    else
      redis.call("XADD", events, id, "t", ingested_ms, "e", event_type, "m", message_id, "d", body, "u", user,
                 "n", ts_ms, "o", growing(order))
    end
    for i = k, k + nkeys - 1 do
      redis.call("ZADD", KEYS[i], seq, seq)
    end
    -- Zero-padded members, so entries due in the same ms come out in seq order.
    local member = string.format(member_format, seq)
    if push_on then
      outbox_add(push_outbox, push_seqs, member, seq, now_ms)
    end
    if forward == "1" then
      outbox_add(forward_outbox, forward_seqs, member, seq, now_ms)
    end
    if copies then
      redis.call("INCR", conflicts)
    end
    local ts = tonumber(ts_ms)
    for c in string.gmatch(entries, "%d+") do
      local entry = catalog[c]
      if entry then
        entry[1] = entry[1] + 1
        if ts > entry[2] then entry[2] = ts end
      else
        catalog[c] = {1, ts}
      end
    end
    results[#results + 1] = {1, seq}
  end
  k = k + nkeys
end

-- The catalog: one ZADD and one read-modify-write of its stats per entry
-- per batch, however many of the batch's events it counts.
for c, entry in pairs(catalog) do
  local n = tonumber(c)
  local zset, stats, member = KEYS[k + 2 * (n - 1)], KEYS[k + 2 * n - 1], ARGV[8 + n]
  local count, newest = entry[1], entry[2]
  redis.call("ZADD", zset, 0, member)
  local old = redis.call("HGET", stats, member)
  if old then
    local space = string.find(old, " ", 1, true)
    count = count + tonumber(string.sub(old, 1, space - 1))
    newest = math.max(newest, tonumber(string.sub(old, space + 1)))
  end
  redis.call("HSET", stats, member, string.format("%d %.0f", count, newest))
end

return {results, redis.call("GET", epoch_key), tonumber(redis.call("GET", seq_key) or "0")}
