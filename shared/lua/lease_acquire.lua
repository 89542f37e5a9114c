-- Acquire or renew a lease held by one owner, with a fencing token.
-- KEYS[1] lease key, KEYS[2] fencing counter key (same hash tag)
-- ARGV[1] owner token, ARGV[2] ttl in ms
-- Returns the fencing token (a number that grows with every new holder) when
-- the caller holds the lease after the call, or 0 when someone else holds it.
local holder = redis.call('HGET', KEYS[1], 'owner')
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('HGET', KEYS[1], 'fence'))
end
if holder then
  return 0
end
local fence = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'fence', fence)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return fence
