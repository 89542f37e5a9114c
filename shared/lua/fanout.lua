-- PUBLISH one payload to many channels in one command; returns the number of
-- receivers of each, in order (0 = nobody subscribed: the caller queues the
-- payload for that member). ARGV[1] = payload, ARGV[2..] = channels.
-- Standalone Redis only: channels are not keys, and on a cluster each
-- channel lives on its own shard (SPUBLISH), so a script cannot reach them.
local payload = ARGV[1]
local counts = {}
for i = 2, #ARGV do
  counts[i - 1] = redis.call('PUBLISH', ARGV[i], payload)
end
return counts
