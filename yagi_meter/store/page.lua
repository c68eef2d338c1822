-- Read one page of a feed in one atomic step: the feed's state, then (unless
-- the caller already has this state rendered) resolve the marker, scan the
-- feed's index in sequence order, filter, and return the matching events.
--
-- KEYS[1]: the feed's index: a zset (member = score = seq) or the events stream
-- KEYS[2]: events stream, KEYS[3]: ids hash, KEYS[4]: by_time zset (the
--          notification times of entries written before the "n" field),
-- KEYS[5]: seq, KEYS[6]: epoch (see epoch.py)
-- ARGV[1]: "zset" or "stream" (what KEYS[1] is)
-- ARGV[2]: "head" (newest first), "last" (oldest first), "forward" (after the
--          marker, oldest first), "backward" (before the marker, newest
--          first), or "state" (the state only)
-- ARGV[3]: marker message_id ("" for head and last, and with ARGV[13])
-- ARGV[4]: limit, ARGV[5]: budget (most index entries examined)
-- ARGV[6], ARGV[7]: notification time window in ms, start inclusive, end
--          exclusive ("" for none)
-- ARGV[8]: event type, exact ("" for none); ARGV[9]: a glob whose only
--          special character is '*' ("" for none), matched in linear time
--          (never a Lua pattern: a client's text must not backtrack in Redis)
-- ARGV[10]: "1" when the marker must be an entry of this index (tenant
--          feeds: a marker from elsewhere must not tell that it exists)
-- ARGV[11]: the version of a rendering the caller holds ("" for none):
--          while the feed still has that version, no page is read
-- ARGV[12]: user_id, exact ("" for none): the entry's "u" field (entries
--          without one, written before it existed, match no user)
-- ARGV[13]: forward and backward from this seq (exclusive) instead of a
--          marker ("" for none): one partition's bound in a merged feed's
--          position (pages.py)
--
-- Returns {status, newest, oldest, newest ingest ms, now ms, epoch, last
-- seq, newest message_id, ...}: the feed's state (0s when empty), Redis'
-- clock, the store's epoch and last seq, then for status 0 (a page)
-- {reached_end, first_seq, first_id, last_seq, last_id, n, seq, ingest ms,
-- message_id, body, merge order ("" for none), ...}; status 1: unknown marker; status 2: state only
-- (asked for, unchanged since the caller's rendering, or an empty feed).
-- A feed's version is "epoch:newest:oldest:newest ingest ms:newest
-- message_id": seqs are given out again after Redis loses data, the epoch
-- or the newest entry's ingest time and id are not (pages.FeedState.version).
-- first/last: the first and last entry examined (0 and "" when none);
-- reached_end 1 when the scan ran off the end of the index.
-- Running as one script means a reader sees every index as of one instant:
-- seqs are given out inside ingest.lua, so no later seq is ever visible
-- before an earlier one and a forward reader never skips.

local index, events, ids, by_time, seq_key, epoch_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local kind, direction, marker = ARGV[1], ARGV[2], ARGV[3]
local limit, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local start_ms, end_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local exact_type, type_pattern = ARGV[8], ARGV[9]
local user = ARGV[12] or ""

-- The value of one field of a stream entry ({name, value, name, value, ...}):
-- a scan of four pairs, cheaper than building a table per entry.
local function field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then
      return flat[i + 1]
    end
  end
  return nil
end

-- Stream entries already read (the state's, a scan's), by seq: each is read once.
local read = {}

-- The feed's state: newest and oldest seq, the newest's ingest time, the clock.
local now = redis.call("TIME")
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local newest, oldest_entry
if kind == "stream" then
  local last = redis.call("XREVRANGE", events, "+", "-", "COUNT", 1)[1]
  newest = last and tonumber(string.sub(last[1], 1, -3))
  if newest then
    read[newest] = last[2]
  end
  oldest_entry = newest
  if newest then
    local first = redis.call("XRANGE", events, "-", "+", "COUNT", 1)[1]
    oldest_entry = tonumber(string.sub(first[1], 1, -3))
    read[oldest_entry] = first[2]
  end
else
  newest = tonumber(redis.call("ZREVRANGE", index, 0, 0)[1])
  oldest_entry = tonumber(redis.call("ZRANGE", index, 0, 0)[1])
end
local ingested, newest_id = "0", ""
if newest then
  local fields = read[newest]
  if not fields then
    local entry = redis.call("XRANGE", events, newest .. "-0", newest .. "-0")[1]
    fields = entry and entry[2]
    read[newest] = fields
  end
  if fields then
    ingested, newest_id = field(fields, "t"), field(fields, "m")
  end
end
local epoch = redis.call("GET", epoch_key) or ""
local last_seq = redis.call("GET", seq_key) or "0"
local state = {newest or 0, oldest_entry or 0, tonumber(ingested), now_ms}
local version = epoch .. ":" .. string.format("%d:%d", state[1], state[2]) .. ":" .. ingested .. ":" .. newest_id
local function reply_with(status, rest)
  local reply = {status, state[1], state[2], state[3], state[4], epoch, tonumber(last_seq), newest_id}
  for _, value in ipairs(rest or {}) do
    reply[#reply + 1] = value
  end
  return reply
end
if direction == "state" or not newest then
  return reply_with(2)
end
if ARGV[11] == version then
  return reply_with(2)
end

local from
if direction == "forward" or direction == "backward" then
  if ARGV[13] and ARGV[13] ~= "" then
    -- A seq (a merged feed's position, pages.py): the bound, instead of an entry.
    from = tonumber(ARGV[13])
  else
    local known = redis.call("HGET", ids, marker)
    if not known then
      return reply_with(1)
    end
    from = tonumber(string.sub(known, 1, string.find(known, " ", 1, true) - 1))
    if ARGV[10] == "1" and kind == "zset" and not redis.call("ZSCORE", index, from) then
      return reply_with(1)
    end
  end
end
local ascending = direction == "forward" or direction == "last"


local function oldest_in_stream()
  return state[2]
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
      if not after and newest and read[newest] then
        -- From the head: the newest entry was read with the state already.  (Never
        -- COUNT 0, which Redis takes for no limit at all.)
        entries = {}
        if count > 1 then
          entries = redis.call("XREVRANGE", events, "(" .. newest .. "-0", "-", "COUNT", count - 1)
        end
        table.insert(entries, 1, {newest .. "-0", read[newest]})
      else
        entries = redis.call("XREVRANGE", events, after and ("(" .. after .. "-0") or "+", "-", "COUNT", count)
      end
    end
    local seqs = {}
    for i, entry in ipairs(entries) do
      seqs[i] = tonumber(string.sub(entry[1], 1, -3))
      read[seqs[i]] = entry[2]
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
  return entry and entry[2]
end

-- The notification's time: the entry's "n" field, or (an entry written
-- before it existed) its by_time score.
local function in_window(seq, fields)
  if not start_ms and not end_ms then
    return true
  end
  local ts = tonumber(field(fields, "n") or redis.call("ZSCORE", by_time, seq))
  if not ts then
    return false
  end
  return (not start_ms or ts >= start_ms) and (not end_ms or ts < end_ms)
end

-- The glob's literal parts, split at each '*' (plain finds, no patterns).
local glob_parts = {}
if type_pattern ~= "" then
  local from = 1
  while true do
    local star = string.find(type_pattern, "*", from, true)
    if not star then
      glob_parts[#glob_parts + 1] = string.sub(type_pattern, from)
      break
    end
    glob_parts[#glob_parts + 1] = string.sub(type_pattern, from, star - 1)
    from = star + 1
  end
end

-- Does `text` match the glob?  The first part is a prefix, the last a
-- suffix, and each part between is found, leftmost, after the one before:
-- taking the leftmost place never loses a match, so there is no
-- backtracking; each plain find is bounded by the lengths of text and part.
local function glob_matches(text)
  local first, last = glob_parts[1], glob_parts[#glob_parts]
  if #text < #first + #last then
    return false
  end
  if string.sub(text, 1, #first) ~= first or string.sub(text, #text - #last + 1) ~= last then
    return false
  end
  local pos, stop = #first + 1, #text - #last  -- middle parts must fit in text[pos..stop]
  for i = 2, #glob_parts - 1 do
    local part = glob_parts[i]
    if part ~= "" then
      local at = string.find(text, part, pos, true)
      if not at or at + #part - 1 > stop then
        return false
      end
      pos = at + #part
    end
  end
  return true
end

local function type_matches(event_type)
  if exact_type ~= "" then
    return event_type == exact_type
  end
  if type_pattern ~= "" then
    return glob_matches(event_type)
  end
  return true
end

local found = {}
local n, scanned = 0, 0
local first_seq, last_seq = nil, nil
local reached_end = 0
local after = from
local filtered = start_ms or end_ms or exact_type ~= "" or type_pattern ~= "" or user ~= ""
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
    local fields = fields_of(seq)
    if fields and in_window(seq, fields) then
      if type_matches(field(fields, "e")) and (user == "" or field(fields, "u") == user) then
        n = n + 1
        found[#found + 1] = seq
        found[#found + 1] = field(fields, "t")
        found[#found + 1] = field(fields, "m")
        found[#found + 1] = field(fields, "d")
        found[#found + 1] = field(fields, "o") or ""
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
-- A full page may end exactly at the end of the index: look one further
-- (the stream's ends are known from the state: no entry is read for it).
if reached_end == 0 then
  if kind == "stream" and after then
    if (ascending and after >= state[1]) or (not ascending and after <= state[2]) then
      reached_end = 1
    end
  elseif #chunk(after, 1) == 0 then
    reached_end = 1
  end
end

local function id_of(seq)
  if not seq then
    return ""
  end
  local fields = fields_of(seq)
  return fields and field(fields, "m") or ""
end

local reply = reply_with(0, {reached_end, first_seq or 0, id_of(first_seq), last_seq or 0, id_of(last_seq), n})
for _, value in ipairs(found) do
  reply[#reply + 1] = value
end
return reply
