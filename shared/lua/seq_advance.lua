-- Move a conversation's head (hash: seq, at) up to ARGV[1], never down, and
-- return the seq it held before (0 for none). The partition's owner numbers
-- messages in memory and sends this in the batch's fan-out pipeline; with
-- persistence off the head is the seq counter, and a value above what the
-- owner expected means another owner numbered messages meanwhile. A missing
-- head is created even at seq 0 (a new conversation, or one rebuilt from the
-- store), so readers can tell "no message yet" from "not known here".
-- KEYS[1] = the head, ARGV[1] = seq, ARGV[2] = at (epoch ms),
-- ARGV[3] = TTL in ms, refreshed on every call (0: none, the head is the truth).
local held = redis.call('HGET', KEYS[1], 'seq')
local before = tonumber(held or '0')
local top = tonumber(ARGV[1])
if held == false or top > before then
  redis.call('HSET', KEYS[1], 'seq', top, 'at', ARGV[2])
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return before
