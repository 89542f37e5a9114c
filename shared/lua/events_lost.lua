-- Entries of a capped stream that its MAXLEN trimmed before a consumer group
-- was given them.
-- KEYS[1] the stream; ARGV[1] the group
-- A gap: the group's last delivered entry is older than the stream's first
-- one, and entries were added that were neither read by the group nor are
-- still in the stream (entries-added - length - entries-read). Having counted
-- it, the script moves the group's read counter past the gap (XGROUP SETID
-- to the same last-delivered-id, with ENTRIESREAD): the next call, from this
-- instance or another, finds only what was trimmed since, so each entry is
-- counted once. That also mends the group's lag, which Redis reports as
-- entries-added - entries-read and would otherwise show the lost entries as
-- unread for good (on Redis 7.0, even once the group has caught up).
-- Returns the entries lost since the last call, or -1 when Redis could not
-- tell how many (entries-read unknown after a manual XGROUP SETID; the
-- counter is set from here on).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do
    t[flat[i]] = flat[i + 1]
  end
  return t
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
-- In a gap every entry left in the stream is unread: all the others are
-- either read or lost.
local gone = stream['entries-added'] - stream['length']
local read = group['entries-read']
if not read and last == '0-0' then
  -- A group that was never given an entry: Redis 7.0 does not count its
  -- reads (nil) until it reads, but there is nothing it could have read.
  read = 0
end
local lost = -1
if read then
  lost = gone - read
  if lost <= 0 then
    return 0
  end
end
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', gone)
return lost
