-- Acknowledge a user's offline queue up to a cursor (inclusive).
-- KEYS[1] the user's offline queue (stream), KEYS[2] the queue's ack floor
-- (highest cursor any device has acknowledged)
-- ARGV[1] cursor (a stream id), ARGV[2] the id just after it, ARGV[3] ttl (ms)
-- Returns {floor, removed}: the floor to continue after (the cursor itself,
-- or a higher floor when another device of the user already acknowledged
-- past this cursor: the caller then missed entries and must sync) and how
-- many entries this call removed.
local function newer(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams > bms or (ams == bms and aseq > bseq)
end
local floor = redis.call('GET', KEYS[2])
if floor and newer(floor, ARGV[1]) then
  return {floor, 0}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
local removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2])
return {ARGV[1], removed}
