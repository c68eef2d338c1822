-- Library (scripts.py): the merge order of an events stream entry (partitions.py):
-- its "o" field, or, for an entry written without one, its ingest ms "t" x 1000.
-- ingest.lua keeps each partition's orders growing with its seqs, cut.lua
-- searches a partition by them; pages.py reads them the same way.

local function merge_order(flat)
  local order, t = nil, nil
  for i = 1, #flat, 2 do
    if flat[i] == "o" then
      order = tonumber(flat[i + 1])
    elseif flat[i] == "t" then
      t = tonumber(flat[i + 1])
    end
  end
  return order or (t or 0) * 1000
end
