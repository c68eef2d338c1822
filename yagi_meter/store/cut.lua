-- Where an entry-id marker cuts one partition of a merged feed (pages.py):
-- the highest seq of the partition's events ingested before a time (or at
-- it), found by a binary search over its events stream, whose ingest times
-- ("t", Redis's clock at ingest) grow with the seq.  Read only, bounded:
-- about log2(seqs) XRANGEs of one entry.
--
-- KEYS[1]: one partition's events stream
-- ARGV[1]: ingest time, ms; ARGV[2]: "1" to count events ingested at that
--          ms as before it (the partition sorts before the marker's), "0" not
--
-- Returns that seq, 0 when no event is before.

local events = KEYS[1]
local at, inclusive = tonumber(ARGV[1]), ARGV[2] == "1"

local function seq_of(entry)
  return tonumber(string.sub(entry[1], 1, -3))
end

local function before(entry)
  local flat = entry[2]
  for i = 1, #flat, 2 do
    if flat[i] == "t" then
      local t = tonumber(flat[i + 1])
      return t < at or (inclusive and t == at)
    end
  end
  return false
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
