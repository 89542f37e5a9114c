-- Forget a connection of a user; report the offline transition.
-- KEYS[1] the user's connection hash, KEYS[2] the user's tombstone hash,
-- KEYS[3] the user's last-seen key
-- ARGV[1] connection id, ARGV[2] now (ms), ARGV[3] tombstone ttl (ms),
-- ARGV[4] gateway id the close is about ('' = any), ARGV[5] last-seen ttl (ms),
-- ARGV[6] '1' when the connection is gone for good (its own close event), not
-- swept with a gateway that may yet come back and announce it again
-- Returns 1 when this made the user offline (last live connection), 2 when
-- the user was already offline, 0 when the user is still online.
local function tombstone()
  -- Bounded: a user who reconnects all day keeps the last hundred or so. An
  -- open is redone within the stream's reclaim time (seconds), not a hundred
  -- reconnects later.
  if redis.call('HLEN', KEYS[2]) >= 128 then
    redis.call('DEL', KEYS[2])
  end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
  -- Closed before (or without) being opened here: leave a tombstone so a late
  -- open event for it is ignored.
  tombstone()
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return 2
  end
  return 0
end
if ARGV[4] ~= '' and current ~= ARGV[4] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[6] == '1' then
  -- Connection events are delivered at least once: an open redone after its
  -- close (a presence instance died before acknowledging it) must not bring
  -- the connection back.
  tombstone()
end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[5])
  return 1
end
return 0
