-- Release a lease only if the caller still holds it (never someone else's).
-- KEYS[1] lease key
-- ARGV[1] owner token
-- Returns 1 when released, 0 when the lease was not the caller's.
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
