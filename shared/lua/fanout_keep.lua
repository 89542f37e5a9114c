-- Publish a message's push to each member's channel; a member no gateway
-- received it for (no live connection) keeps the message in their offline
-- queue. Both in one script: a gateway subscribes a connecting user's channel
-- before it announces the connection, and delivery drains the queue only
-- once announced, so the message is either received live or already in the
-- queue that drain reads. Publish first and queue in a later round trip, and
-- a connect could fall in between: published to nobody, queued after the
-- drain, and waiting there until the next connect.
-- KEYS[2i-1], KEYS[2i] member i's offline queue and overflow set (one hash
-- tag with the member's channel, which has the same slot on a cluster)
-- ARGV[1] 'PUBLISH' or 'SPUBLISH' (Redis Cluster), ARGV[2] the push,
-- ARGV[3] queue cap (entries), ARGV[4] retention (ms), ARGV[5] conversation id,
-- ARGV[6] the message as queued, ARGV[7] now (ms), ARGV[8] the push for the
-- first member's channel when it differs (the sender's, carrying the sender's
-- message_ack: see shared/push.py), '' for the same, ARGV[9..] members' channels
-- Returns for each member, in order, the receivers of the push (> 0) or, when
-- it was queued, minus the number of entries the cap or retention pushed out
-- of that queue (<= 0).
local cap = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local now = tonumber(ARGV[7])
local results = {}
for i = 9, #ARGV do
  local n = i - 8
  local push = ARGV[2]
  if n == 1 and ARGV[8] ~= '' then
    push = ARGV[8]
  end
  local receivers = redis.call(ARGV[1], ARGV[i], push)
  if receivers > 0 then
    results[n] = receivers
  else
    results[n] = -keep(KEYS[2 * n - 1], KEYS[2 * n], cap, retention, ARGV[5], ARGV[6], now)
  end
end
return results
