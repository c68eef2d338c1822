-- Remove one step of expired events (retention.py), atomically: each with
-- its index entries, its by_time and ids entries and its stream entry, in
-- one script, so no reader ever sees an index entry whose event is gone
-- (but for an event whose body could not be decoded: events.py names only
-- the index keys it knows without the body, and the others stay).
--
-- KEYS[1..3]: events, ids, by_time; KEYS[4..3+n_outboxes]: the outboxes'
--             ":seqs" zsets (the floor); then every index zset the events
--             below are in.  All keys of one partition: no key name is
--             built here.  (An index zset emptied here is gone: Redis deletes
--             an empty zset.)
-- ARGV[1]: n_outboxes; ARGV[2]: n, the number of events; ARGV[3..2+n]: their
--          seqs, oldest first, as the head read returned them (the
--          stream's first entries, each ingested before the cutoff: it stays
--          so); ARGV[3+n..2+2n]: their message_ids.
--
-- Each event is checked again here, as of now: it is still the one stored
-- under its seq (ids maps its message_id to that seq: after Redis lost data
-- a seq may belong to another event, and a message stored again after its
-- removal has another seq), and it is below every outbox's oldest pending
-- seq (`dead-letters retry` can add an old seq).  The first event at or over
-- the floor ends the step; one already gone (another retention process
-- removed it) is skipped, so two processes never remove an event twice.
--
-- Index entries are removed by score (an index zset scores each member by
-- its seq): when every event up to the last one removed passed the check
-- (the usual case), each index zset loses every entry up to that seq in one
-- ZREMRANGEBYSCORE, and the stream its head in one XTRIM; these events were
-- the stream's first entries, so nothing else is at those seqs.  Otherwise
-- each index zset's entries up to that seq are read and only the checked
-- events' removed, and their stream entries one by one.
-- Returns {events removed, index entries removed, last seq removed (0: none)}.
-- include: _outbox.lua

local events, ids, by_time = KEYS[1], KEYS[2], KEYS[3]
local n_outboxes, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local first_index = 4 + n_outboxes

local floor = outbox_floor(4, 3 + n_outboxes)

-- Variadic calls in chunks (Lua's unpack has a limit on its arguments).
local function each_chunk(list, first, final, call)
  for i = first, final, 1000 do
    call(unpack(list, i, math.min(i + 999, final)))
  end
end

-- The events below the floor, and their ids entries (HMGET, in chunks).
local below = n
for i = 1, n do
  if floor and tonumber(ARGV[2 + i]) >= floor then
    below = i - 1
    break
  end
end
local known = {}
each_chunk(ARGV, 3 + n, 2 + n + below, function(...)
  for _, value in ipairs(redis.call("HMGET", ids, ...)) do
    known[#known + 1] = value
  end
end)

-- Which events are still there to remove.  The fast path needs those that
-- passed to be the step's first ones: a failed check after the last removed
-- event does not matter (nothing above its seq is touched).
local every, failed = true, false
local removable = {}  -- seq (string) -> true
local seqs, messages = {}, {}
local last = 0
for i = 1, below do
  local seq, entry = ARGV[2 + i], known[i]
  if entry and string.sub(entry, 1, #seq + 1) == seq .. " " then
    removable[seq] = true
    seqs[#seqs + 1] = seq
    messages[#messages + 1] = ARGV[2 + n + i]
    last = tonumber(seq)
    every = every and not failed
  else
    failed = true
  end
end
if #seqs == 0 then
  return {0, 0, 0}
end

local index_entries = 0
for k = first_index, #KEYS do
  if every then
    index_entries = index_entries + redis.call("ZREMRANGEBYSCORE", KEYS[k], "-inf", last)
  else
    local wanted = {}
    for _, member in ipairs(redis.call("ZRANGEBYSCORE", KEYS[k], "-inf", last)) do
      if removable[member] then
        wanted[#wanted + 1] = member
      end
    end
    each_chunk(wanted, 1, #wanted, function(...)
      index_entries = index_entries + redis.call("ZREM", KEYS[k], ...)
    end)
  end
end
if redis.call("EXISTS", by_time) == 1 then  -- stores written before the stream held "n"
  each_chunk(seqs, 1, #seqs, function(...) redis.call("ZREM", by_time, ...) end)
end
each_chunk(messages, 1, #messages, function(...) redis.call("HDEL", ids, ...) end)
-- The stream's head: every entry up to the last one removed is one of these,
-- so trimming below it is exact and costs a node, not an entry, at a time;
-- otherwise only the checked entries go.
local head = redis.call("XRANGE", events, "-", "+", "COUNT", 1)[1]
if every and head and head[1] == ARGV[3] .. "-0" then
  redis.call("XTRIM", events, "MINID", last .. "-1")
else
  local stream_ids = {}
  for i, seq in ipairs(seqs) do
    stream_ids[i] = seq .. "-0"
  end
  each_chunk(stream_ids, 1, #stream_ids, function(...) redis.call("XDEL", events, ...) end)
end
return {#seqs, index_entries, last}
