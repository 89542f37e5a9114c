-- Move a conversation's seq counter (persistence off) up to ARGV[1], never
-- down, and return the value it held before. The owner of the conversation
-- numbers messages in memory and sends this with the batch's fan-out; a value
-- above what it expected means another owner numbered messages meanwhile.
-- KEYS[1] = the counter, ARGV[1] = the batch's last seq.
local before = tonumber(redis.call('GET', KEYS[1]) or '0')
local top = tonumber(ARGV[1])
if top > before then
  redis.call('SET', KEYS[1], top)
end
return before
