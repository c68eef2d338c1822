-- Where an entry-id marker cuts one partition of a merged feed (pages.py):
-- the highest seq of the partition's events whose merge order is before the
-- marker's (or equal), found by a binary search over its events stream,
-- whose merge orders (_order.lua) grow with the seq (ingest.lua raises an
-- order that would not).  Read only, bounded: about log2(seqs) XRANGEs of
-- one entry.
--
-- KEYS[1]: one partition's events stream
-- ARGV[1]: the marker's merge order; ARGV[2]: "1" to count events of that
--          order as before it (the partition sorts before the marker's), "0" not
--
-- Returns that seq, 0 when no event is before.
-- include: _order.lua

local events = KEYS[1]
local at, inclusive = tonumber(ARGV[1]), ARGV[2] == "1"

local function seq_of(entry)
  return tonumber(string.sub(entry[1], 1, -3))
end

local function before(entry)
  local order = merge_order(entry[2])
  return order < at or (inclusive and order == at)
end

local first = redis.call("XRANGE", events, "-", "+", "COUNT", 1)[1]
if not first or not before(first) then
  return 0
end
local last = redis.call("XREVRANGE", events, "+", "-", "COUNT", 1)[1]
if before(last) then
  return seq_of(last)
end
-- Entries at lo and below are before; entries at hi and above are not.
local lo, hi = seq_of(first), seq_of(last)
while hi - lo > 1 do
  local mid = math.floor((lo + hi) / 2)
  local entry = redis.call("XRANGE", events, mid .. "-0", "+", "COUNT", 1)[1]
  local seq = seq_of(entry)
  if seq >= hi then
    hi = mid  -- nothing between mid and hi: no entry from mid on is before
  elseif before(entry) then
    lo = seq
  else
    hi = seq
  end
end
return lo
