-- Rate-limited stream append: rate_limit.lua's check, then the XADD when the
-- check allows it, in one call (one round trip per relayed batch instead of
-- two). The loader wraps rate_limit.lua as the function `check` above this.
-- Standalone Redis only: the limiter's key and the stream are in different
-- slots of a cluster.
-- KEYS[1] the limiter's key, KEYS[2] the stream
-- ARGV[1], ARGV[2] as rate_limit.lua (emission interval in µs, burst)
-- ARGV[3] the stream's approximate cap, ARGV[4] the entry's field, ARGV[5] its body
-- Returns rate_limit.lua's reply: {allowed (1/0), retry after in ms}.
local verdict = check()
if verdict[1] == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', ARGV[4], ARGV[5])
end
return verdict
