-- Remove one step of expired events (retention.py), atomically: each with
-- its index entries, its by_time and ids entries and its stream entry, in
-- one script, so no reader ever sees an index entry whose event is gone.
--
-- KEYS[1..4]: events, ids, by_time, indexes; KEYS[5..4+n_outboxes]: the
--             outboxes' ":seqs" zsets (the floor); then the index zsets the
--             events below are in.  All keys of one store unit (today the
--             store; later one partition): no key name is built here.
-- ARGV[1]: retention in ms; ARGV[2]: "now" in ms ("" for Redis's clock);
-- ARGV[3]: n_outboxes; ARGV[4]: number of events;
-- then per event, oldest first (as retention_head.lua returned them):
--   seq, t (ingest ms), message_id, nkeys, then nkeys positions in KEYS of
--   its index zsets.
--
-- Each event is checked again here, as of now: it is still the one stored
-- under its seq (ids maps its message_id to that seq: after Redis lost data
-- a seq may belong to another event), it was ingested before the cutoff, and
-- it is below every outbox's oldest pending seq.  The first event failing
-- the cutoff or the floor ends the step (the stream is removed from its
-- head); one already gone (another retention process removed it) is skipped,
-- so two processes never remove an event twice.
-- Returns {events removed, index entries removed, last seq removed (0: none)}.

local events, ids, by_time, indexes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local retention_ms = tonumber(ARGV[1])
local now_ms = tonumber(ARGV[2])
if not now_ms then
  local now = redis.call("TIME")
  now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
end
local cutoff = now_ms - retention_ms
local n_outboxes, n_events = tonumber(ARGV[3]), tonumber(ARGV[4])

local floor = nil
for i = 5, 4 + n_outboxes do
  local first = redis.call("ZRANGE", KEYS[i], 0, 0, "WITHSCORES")
  if first[2] then
    local seq = tonumber(first[2])
    if not floor or seq < floor then
      floor = seq
    end
  end
end

local seqs, stream_ids, messages = {}, {}, {}
local by_key = {}  -- KEYS position -> seqs to remove from that index
local last = 0
local a = 5
for _ = 1, n_events do
  local seq, t, message_id, nkeys = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  local positions = a + 4
  a = a + 4 + nkeys
  if t >= cutoff or (floor and tonumber(seq) >= floor) then
    break
  end
  local known = redis.call("HGET", ids, message_id)
  if known and string.sub(known, 1, #seq + 1) == seq .. " " then
    seqs[#seqs + 1] = seq
    stream_ids[#stream_ids + 1] = seq .. "-0"
    messages[#messages + 1] = message_id
    for i = positions, positions + nkeys - 1 do
      local at = tonumber(ARGV[i])
      local list = by_key[at]
      if not list then
        list = {}
        by_key[at] = list
      end
      list[#list + 1] = seq
    end
    last = tonumber(seq)
  end
end

-- Variadic calls, in chunks (Lua's unpack has a limit on its arguments).
local function each_chunk(list, call)
  for i = 1, #list, 1000 do
    call(unpack(list, i, math.min(i + 999, #list)))
  end
end

local index_entries = 0
for at, list in pairs(by_key) do
  local key = KEYS[at]
  each_chunk(list, function(...) index_entries = index_entries + redis.call("ZREM", key, ...) end)
  if redis.call("ZCARD", key) == 0 then
    redis.call("SREM", indexes, key)
  end
end
if #seqs > 0 then
  each_chunk(seqs, function(...) redis.call("ZREM", by_time, ...) end)
  each_chunk(messages, function(...) redis.call("HDEL", ids, ...) end)
  each_chunk(stream_ids, function(...) redis.call("XDEL", events, ...) end)
end
return {#seqs, index_entries, last}
