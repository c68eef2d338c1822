-- Move claimed push-outbox entries into the delivery queues of the live
-- subscriptions of their topics, and mark those subscriptions due: one
-- atomic step, so a crash loses or doubles nothing.
--
-- KEYS[1..5]: outbox:push, outbox:push:seqs, outbox:push:attempts, hub:leases, hub:due
-- KEYS[6..]:  per entry, the hub:topic:<topic> sets of its topics
-- ARGV[1]: the prefix of delivery queues ("<prefix>hub:queue:")
-- ARGV[2..]: per entry: outbox member, seq, number of topic keys
--
-- An entry no longer in the outbox (another worker fanned it out after this
-- one's claim lapsed) is skipped, so no subscriber gets it twice.  A
-- subscription already due or leased keeps its schedule (ZADD NX): one in
-- back-off is not hurried, one being delivered to is not claimed twice.
-- Returns the number of queue entries added.
local outbox, outbox_seqs, outbox_attempts, leases, due = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local queue_prefix = ARGV[1]
local now = redis.call("TIME")
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)

local members_of = {}
local live = {}
local added = 0
local k = 6
local a = 2
while a <= #ARGV do
  local member, seq, nkeys = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  if redis.call("ZSCORE", outbox_seqs, member) then
    for i = k, k + nkeys - 1 do
      local ids = members_of[KEYS[i]]
      if not ids then
        ids = redis.call("SMEMBERS", KEYS[i])
        members_of[KEYS[i]] = ids
      end
      for _, id in ipairs(ids) do
        if live[id] == nil then
          local expires = redis.call("ZSCORE", leases, id)
          live[id] = expires ~= false and tonumber(expires) > now_ms
        end
        if live[id] then
          added = added + redis.call("ZADD", queue_prefix .. id, seq, seq)
          redis.call("ZADD", due, "NX", now_ms, id)
        end
      end
    end
    redis.call("ZREM", outbox, member)
    redis.call("ZREM", outbox_seqs, member)
    redis.call("HDEL", outbox_attempts, member)
  end
  k = k + nkeys
end
return added
