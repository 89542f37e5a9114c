-- Record a live connection of a user; report the online transition.
-- KEYS[1] the user's connection hash (connectionId -> gatewayId)
-- KEYS[2] the user's tombstone hash (connectionId -> closed-at ms)
-- ARGV[1] connection id, ARGV[2] gateway id, ARGV[3] tombstone ttl (ms)
-- Returns 1 when this made the user online (first live connection), 0 when
-- the user already was, -1 when the connection was already closed (its close
-- event was handled first by another presence instance).
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return -1
end
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if added == 1 and redis.call('HLEN', KEYS[1]) == 1 then
  return 1
end
return 0
