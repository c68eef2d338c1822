-- Read one page of a feed in one atomic step: resolve the marker, scan the
-- feed's index in sequence order, filter, and return the matching events.
--
-- KEYS[1]: the feed's index: a zset (member = score = seq) or the events stream
-- KEYS[2]: events stream, KEYS[3]: ids hash, KEYS[4]: by_time zset
-- ARGV[1]: "zset" or "stream" (what KEYS[1] is)
-- ARGV[2]: "head" (newest first), "last" (oldest first), "forward" (after the
--          marker, oldest first) or "backward" (before the marker, newest first)
-- ARGV[3]: marker message_id ("" for head and last)
-- ARGV[4]: limit, ARGV[5]: budget (most index entries examined)
-- ARGV[6], ARGV[7]: notification time window in ms, start inclusive, end
--          exclusive ("" for none)
-- ARGV[8]: event type, exact ("" for none); ARGV[9]: the same as a Lua
--          pattern when it had a '*' ("" for none)
-- ARGV[10]: "1" when the marker must be an entry of this index (tenant
--          feeds: a marker from elsewhere must not tell that it exists)
--
-- Returns {status, reached_end, first_seq, first_id, last_seq, last_id, n,
--          seq, ingest ms, body, ...}: status 0 ok, 1 unknown marker;
-- first/last: the first and last entry examined (0 and "" when none);
-- reached_end 1 when the scan ran off the end of the index.
-- Running as one script means a reader sees every index as of one instant:
-- seqs are given out inside ingest.lua, so no later seq is ever visible
-- before an earlier one and a forward reader never skips.

local index, events, ids, by_time = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local kind, direction, marker = ARGV[1], ARGV[2], ARGV[3]
local limit, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local start_ms, end_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local exact_type, type_pattern = ARGV[8], ARGV[9]

local from
if direction == "forward" or direction == "backward" then
  local known = redis.call("HGET", ids, marker)
  if not known then
    return {1}
  end
  from = tonumber(string.sub(known, 1, string.find(known, " ", 1, true) - 1))
  if ARGV[10] == "1" and kind == "zset" and not redis.call("ZSCORE", index, from) then
    return {1}
  end
end
local ascending = direction == "forward" or direction == "last"

-- Stream entries already read while scanning the global feed, by seq.
local read = {}

local function fields_table(flat)
  local fields = {}
  for i = 1, #flat, 2 do
    fields[flat[i]] = flat[i + 1]
  end
  return fields
end

local oldest = nil
local function oldest_in_stream()
  if oldest == nil then
    local first = redis.call("XRANGE", events, "-", "+", "COUNT", 1)[1]
    oldest = first and tonumber(string.sub(first[1], 1, -3)) or 0
  end
  return oldest
end

-- The next chunk of the index after position `after` (nil: from the end).
local function chunk(after, count)
  if kind == "stream" then
    local entries
    if ascending then
      entries = redis.call("XRANGE", events, after and ("(" .. after .. "-0") or "-", "+", "COUNT", count)
    else
      -- Redis walks the whole stream when XREVRANGE starts below its first
      -- entry: answer that case without asking.
      if after and after <= oldest_in_stream() then
        return {}
      end
      entries = redis.call("XREVRANGE", events, after and ("(" .. after .. "-0") or "+", "-", "COUNT", count)
    end
    local seqs = {}
    for i, entry in ipairs(entries) do
      seqs[i] = tonumber(string.sub(entry[1], 1, -3))
      read[seqs[i]] = fields_table(entry[2])
    end
    return seqs
  end
  local seqs
  if ascending then
    seqs = redis.call("ZRANGEBYSCORE", index, after and ("(" .. after) or "-inf", "+inf", "LIMIT", 0, count)
  else
    seqs = redis.call("ZREVRANGEBYSCORE", index, after and ("(" .. after) or "+inf", "-inf", "LIMIT", 0, count)
  end
  for i, seq in ipairs(seqs) do
    seqs[i] = tonumber(seq)
  end
  return seqs
end

local function fields_of(seq)
  if read[seq] then
    return read[seq]
  end
  local entry = redis.call("XRANGE", events, seq .. "-0", seq .. "-0")[1]
  return entry and fields_table(entry[2])
end

local function in_window(seq)
  if not start_ms and not end_ms then
    return true
  end
  local ts = tonumber(redis.call("ZSCORE", by_time, seq))
  if not ts then
    return false
  end
  return (not start_ms or ts >= start_ms) and (not end_ms or ts < end_ms)
end

local function type_matches(event_type)
  if exact_type ~= "" then
    return event_type == exact_type
  end
  if type_pattern ~= "" then
    return string.match(event_type, type_pattern) ~= nil
  end
  return true
end

local found = {}
local n, scanned = 0, 0
local first_seq, last_seq = nil, nil
local reached_end = 0
local after = from
local filtered = start_ms or end_ms or exact_type ~= "" or type_pattern ~= ""
while n < limit and scanned < budget do
  local want = limit - n
  if filtered then
    want = math.min(budget - scanned, math.max(want * 4, 100))
  end
  local seqs = chunk(after, want)
  local stopped = false
  for _, seq in ipairs(seqs) do
    scanned = scanned + 1
    first_seq = first_seq or seq
    last_seq = seq
    after = seq
    if in_window(seq) then
      local fields = fields_of(seq)
      if fields and type_matches(fields["e"]) then
        n = n + 1
        found[#found + 1] = seq
        found[#found + 1] = fields["t"]
        found[#found + 1] = fields["d"]
        if n == limit then
          stopped = true
          break
        end
      end
    end
  end
  if #seqs < want and not stopped then
    reached_end = 1
  end
  if #seqs < want or stopped then
    break
  end
end
-- A full page may end exactly at the end of the index: look one further.
if reached_end == 0 and #chunk(after, 1) == 0 then
  reached_end = 1
end

local function id_of(seq)
  if not seq then
    return ""
  end
  local fields = fields_of(seq)
  return fields and fields["m"] or ""
end

local reply = {0, reached_end, first_seq or 0, id_of(first_seq), last_seq or 0, id_of(last_seq), n}
for _, value in ipairs(found) do
  reply[#reply + 1] = value
end
return reply
