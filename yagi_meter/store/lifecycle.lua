-- The events of chosen types in one resource's index, oldest first, in one atomic read.
-- KEYS[1]: the resource zset (member = score = seq), KEYS[2]: the events stream.
-- ARGV[1]: most index entries examined (the script's bound), ARGV[2]: most events returned,
-- ARGV[3..]: the event types wanted.
-- Returns {complete, seq, ingest ms, body, ...}: complete is 0 when a bound stopped the scan.
-- An entry's type is read from the stream's "e" field: bodies of other events are never sent.
local budget, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local wanted = {}
for i = 3, #ARGV do
  wanted[ARGV[i]] = true
end
local seqs = redis.call("ZRANGE", KEYS[1], 0, budget - 1)
local complete = 1
if #seqs == budget and redis.call("ZCARD", KEYS[1]) > budget then
  complete = 0
end
local out = {complete}
local found = 0
for _, seq in ipairs(seqs) do
  local entry = redis.call("XRANGE", KEYS[2], seq .. "-0", seq .. "-0")[1]
  if entry then
    local fields, kind, at, body = entry[2], nil, nil, nil
    for j = 1, #fields, 2 do
      local name = fields[j]
      if name == "e" then kind = fields[j + 1]
      elseif name == "t" then at = fields[j + 1]
      elseif name == "d" then body = fields[j + 1] end
    end
    if kind and wanted[kind] then
      if found == most then
        out[1] = 0
        break
      end
      found = found + 1
      out[#out + 1] = seq
      out[#out + 1] = at
      out[#out + 1] = body
    end
  end
end
return out
