-- Read the oldest events retention may remove, with their bodies: one
-- step's worth (retention.py).  Read only; retention.lua removes them.
--
-- KEYS[1]: events stream; KEYS[2..]: the outboxes' ``:seqs`` zsets (floor).
-- All keys of one store unit (today the store; later one partition).
-- ARGV[1]: most entries to return; ARGV[2]: retention in ms;
-- ARGV[3]: "now" in ms ("" for Redis's clock, the clock "t" was taken from).
--
-- Returns {cutoff ms, floor (0: none), seq, t, m, e, d, ...}: the stream's
-- first entries, in order, while ingested before the cutoff and below every
-- outbox's oldest pending seq, each with its body d: the caller decodes it
-- for the event's tenant and resource index keys (events.py keys_of, the
-- function ingest computes them with), which the entry holds nowhere else.
-- Chunks of at most 100 entries are read, so a step with little to remove
-- copies few bodies into Lua.
-- include: _outbox.lua

local events = KEYS[1]
local limit, retention_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local now_ms = tonumber(ARGV[3])
if not now_ms then
  local now = redis.call("TIME")
  now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
end
local cutoff = now_ms - retention_ms

local floor = outbox_floor(2, #KEYS)

local reply = {cutoff, floor or 0}
local n = 0
local start = "-"
while n < limit do
  local want = math.min(100, limit - n)
  local entries = redis.call("XRANGE", events, start, "+", "COUNT", want)
  for _, entry in ipairs(entries) do
    local seq = tonumber(string.sub(entry[1], 1, -3))
    local f = entry[2]
    local t, m, e, d
    for i = 1, #f, 2 do
      local name = f[i]
      if name == "t" then t = f[i + 1]
      elseif name == "m" then m = f[i + 1]
      elseif name == "e" then e = f[i + 1]
      elseif name == "d" then d = f[i + 1]
      end
    end
    if tonumber(t) >= cutoff or (floor and seq >= floor) then
      return reply
    end
    reply[#reply + 1] = seq
    reply[#reply + 1] = t
    reply[#reply + 1] = m
    reply[#reply + 1] = e
    reply[#reply + 1] = d
    n = n + 1
    start = "(" .. entry[1]
  end
  if #entries < want then
    break
  end
end
return reply
