-- Trim the entries of a stream that every consumer group is done with.
-- KEYS[1] the stream
-- An entry is done for a group once it was delivered (at or before the
-- group's last-delivered-id) and is no longer pending (acknowledged). The
-- floor is, per group, its oldest pending entry or else its last delivered
-- one; the stream is trimmed (MINID ~, whole nodes only) below the lowest
-- floor, so nothing undelivered or unacknowledged is ever removed. A stream
-- without groups is left to its MAXLEN cap. Returns the entries removed.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local floor = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do
    info[group[i]] = group[i + 1]
  end
  local keep = info['last-delivered-id']
  if info['pending'] > 0 then
    keep = redis.call('XPENDING', KEYS[1], info['name'])[2]
  end
  if floor == nil or older(keep, floor) then
    floor = keep
  end
end
if floor == nil then
  return 0
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', floor)
