-- Move claimed push-outbox entries into the delivery queues of the live
-- subscriptions of their topics, and mark those subscriptions due: one
-- atomic step, so a crash loses or doubles nothing.  With partitions the
-- outbox is in another slot than the hub: it is not named here, and the
-- caller marks the entries done after this (a crash between the two fans
-- an entry out again: a queue holds it once, a subscriber may get it twice).
--
-- KEYS[1..2]: hub:leases, hub:due
-- KEYS[3..]:  per topic, its hub:topic:<topic> set, then the hub:queue:<id> of
--             each subscription the caller read in that set; then, when
--             ARGV[2] is "1", outbox:push, outbox:push:seqs, outbox:push:attempts
-- ARGV[1]: the number of topics; ARGV[2]: "1" when the outbox keys are given
-- ARGV[3..]: per topic: the number of subscription ids, then the ids, in the
--            order of their queue keys; then per entry: outbox member, seq
--            (store-wide: the queue's member and score), number of its
--            topics, then their positions (1-based) in the topic list
--
-- The caller reads the topic sets first (every key a script touches is in
-- KEYS, as a Redis Cluster requires); when a set is no longer what the caller
-- read, nothing is written and -1 comes back: the caller reads again and retries.
-- An entry no longer in the outbox (another worker fanned it out after this
-- one's claim lapsed) is skipped, so no subscriber gets it twice.  A
-- subscription already due or leased keeps its schedule (ZADD NX): one in
-- back-off is not hurried, one being delivered to is not claimed twice.
-- Returns the number of queue entries added.
-- include: _outbox.lua

local leases, due = KEYS[1], KEYS[2]
local with_outbox = ARGV[2] == "1"
local outbox, outbox_seqs, outbox_attempts = KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]
local now = redis.call("TIME")
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)

-- topics[t] = {ids = {...}, queues = {...}}, checked against the sets as they are now.
local topics = {}
local k, a = 3, 3
for t = 1, tonumber(ARGV[1]) do
  local topic_key, n = KEYS[k], tonumber(ARGV[a])
  if redis.call("SCARD", topic_key) ~= n then
    return -1
  end
  local ids, queues = {}, {}
  for i = 1, n do
    ids[i], queues[i] = ARGV[a + i], KEYS[k + i]
    if redis.call("SISMEMBER", topic_key, ids[i]) == 0 then
      return -1
    end
  end
  topics[t] = {ids = ids, queues = queues}
  k, a = k + n + 1, a + n + 1
end

local live = {}
local added = 0
while a <= #ARGV do
  local member, seq, ntopics = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  if not with_outbox or redis.call("ZSCORE", outbox_seqs, member) then
    for j = a + 3, a + 2 + ntopics do
      local topic = topics[tonumber(ARGV[j])]
      for i, id in ipairs(topic.ids) do
        if live[id] == nil then
          local expires = redis.call("ZSCORE", leases, id)
          live[id] = expires ~= false and tonumber(expires) > now_ms
        end
        if live[id] then
          added = added + redis.call("ZADD", topic.queues[i], seq, seq)
          redis.call("ZADD", due, "NX", now_ms, id)
        end
      end
    end
    if with_outbox then
      outbox_done(outbox, outbox_seqs, outbox_attempts, member)
    end
  end
  a = a + 3 + ntopics
end
return added
