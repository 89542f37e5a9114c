-- Not a script of its own: the body of keep(queue, overflow, cap, retention,
-- conversation, message, now), which fanout_keep.lua runs for each member
-- that no gateway received a message for (see scripts.load_script_with).
-- Keeps one message for a user with no live connection, in a bounded stream:
-- queue, overflow are the user's offline queue (stream) and overflow set;
-- cap (entries), retention (ms), now (ms) are numbers.
-- Entries pushed out by the cap or past retention are never dropped silently:
-- their conversation ids go to the overflow set, which makes the next
-- connecting device receive sync_required for them.
-- Returns the number of entries pushed out.
local horizon = now - retention
local dropped = 0
local length = redis.call('XLEN', queue)
while length > 0 do
  local oldest = redis.call('XRANGE', queue, '-', '+', 'COUNT', 1)[1]
  local ms = tonumber(string.match(oldest[1], '^(%d+)'))
  if length < cap and ms >= horizon then
    break
  end
  local fields = oldest[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'c' then
      redis.call('SADD', overflow, fields[i + 1])
    end
  end
  redis.call('XDEL', queue, oldest[1])
  length = length - 1
  dropped = dropped + 1
end
redis.call('XADD', queue, '*', 'c', conversation, 'd', message)
redis.call('PEXPIRE', queue, retention)
if dropped > 0 or redis.call('EXISTS', overflow) == 1 then
  redis.call('PEXPIRE', overflow, retention)
end
return dropped
