-- Entries of a capped stream that its MAXLEN trimmed before a consumer group
-- was given them, counted once however many instances of the group's
-- service ask (they share the group, so they see the same gap).
-- KEYS[1] the stream, KEYS[2] hash of gaps already counted (field: the
-- group's last-delivered-id, where the gap begins; value: entries counted)
-- ARGV[1] the group, ARGV[2] how long the hash is kept (seconds)
-- A gap: the group's last delivered entry is older than the stream's first
-- one, and entries were added that were neither read by the group nor are
-- still in the stream (entries-added - length - entries-read). Returns the
-- entries lost since the last call that counted this gap; -1 the first time
-- a gap is seen whose size Redis cannot tell (entries-read unknown); else 0.
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do
    t[flat[i]] = flat[i + 1]
  end
  return t
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local stream = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
local first = stream['first-entry']
if not first then
  return 0
end
local group = nil
for _, flat in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = fields(flat)
  if info['name'] == ARGV[1] then
    group = info
  end
end
if group == nil then
  return 0
end
local last = group['last-delivered-id']
if not older(last, first[1]) then
  return 0
end
local read = group['entries-read']
if not read then
  if redis.call('HSETNX', KEYS[2], last, '?') == 1 then
    redis.call('EXPIRE', KEYS[2], ARGV[2])
    return -1
  end
  return 0
end
local lost = stream['entries-added'] - stream['length'] - read
local counted = tonumber(redis.call('HGET', KEYS[2], last)) or 0
if lost <= counted then
  return 0
end
redis.call('HSET', KEYS[2], last, lost)
redis.call('EXPIRE', KEYS[2], ARGV[2])
return lost - counted
