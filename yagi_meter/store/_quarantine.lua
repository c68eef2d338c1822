-- Library (scripts.py): every write the quarantine's keys get from a script.
-- quarantine.py owns these keys (keys.py); quarantine.lua includes this file.

-- Remove one entry and its digest, so the same message may be quarantined again.
local function quarantine_remove(stream, digests, entry_id)
  local entry = redis.call("XRANGE", stream, entry_id, entry_id)[1]
  if entry then
    for f = 1, #entry[2], 2 do
      if entry[2][f] == "sha256" then
        redis.call("HDEL", digests, entry[2][f + 1])
      end
    end
    redis.call("XDEL", stream, entry_id)
  end
end

-- Add a message unless its sha256 is already there; false for such a repeat.
local function quarantine_add(stream, count, digests, at, reason, source, body, sha256, size, truncated)
  if redis.call("HEXISTS", digests, sha256) == 1 then
    return false
  end
  local id = redis.call("XADD", stream, "*", "reason", reason, "source", source, "at", at,
                        "body", body, "sha256", sha256, "size", size, "truncated", truncated)
  redis.call("HSET", digests, sha256, id)
  redis.call("INCR", count)
  return true
end
