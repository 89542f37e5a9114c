-- Keep one message for a user with no live connection, in a bounded stream.
-- KEYS[1] the user's offline queue (stream), KEYS[2] the user's overflow set
-- ARGV[1] cap (entries), ARGV[2] retention (ms), ARGV[3] conversation id,
-- ARGV[4] encoded message, ARGV[5] now (ms)
-- Entries pushed out by the cap or past retention are never dropped silently:
-- their conversation ids go to the overflow set, which makes the next
-- connecting device receive sync_required for them.
-- Returns the number of entries pushed out.
local cap = tonumber(ARGV[1])
local horizon = tonumber(ARGV[5]) - tonumber(ARGV[2])
local dropped = 0
local length = redis.call('XLEN', KEYS[1])
while length > 0 do
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local ms = tonumber(string.match(oldest[1], '^(%d+)'))
  if length < cap and ms >= horizon then
    break
  end
  local fields = oldest[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'c' then
      redis.call('SADD', KEYS[2], fields[i + 1])
    end
  end
  redis.call('XDEL', KEYS[1], oldest[1])
  length = length - 1
  dropped = dropped + 1
end
redis.call('XADD', KEYS[1], '*', 'c', ARGV[3], 'd', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if dropped > 0 or redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return dropped
