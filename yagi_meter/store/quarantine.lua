-- Quarantine a batch's rejected messages and remove the entries its
-- requeued messages came from, in one atomic step (the quarantine's slot;
-- the events of the same batch are written by ingest.lua, per partition).
-- quarantine.py owns these keys; the writes are _quarantine.lua's.
--
-- KEYS[1..4]: quarantine, quarantine:count, quarantine:digests, quarantine:repeats
-- ARGV[1]: quarantine entry time (ms); ARGV[2]: number of rejected messages
-- then per rejected message (6): reason, source, body, sha256 of the whole
--   raw message, its size in bytes, "1" when body is only its head
-- then the quarantine entry ids to remove (requeued messages)
--
-- Returns the number of rejected messages whose sha256 was already in the
-- quarantine (repeats: counted in quarantine:repeats, not added again).
-- include: _quarantine.lua

local quarantine, count, digests, repeats_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n_rejected = tonumber(ARGV[2])

-- Requeued entries go first, with their digests: a message still bad is
-- then quarantined anew instead of being taken for a repeat.
for i = 3 + n_rejected * 6, #ARGV do
  quarantine_remove(quarantine, digests, ARGV[i])
end

local repeats = 0
local a = 3
for _ = 1, n_rejected do
  if not quarantine_add(quarantine, count, digests, ARGV[1], ARGV[a], ARGV[a + 1], ARGV[a + 2],
                        ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]) then
    -- The same raw message again (redelivery after a crash, a second replay).
    redis.call("INCR", repeats_key)
    repeats = repeats + 1
  end
  a = a + 6
end
return repeats
