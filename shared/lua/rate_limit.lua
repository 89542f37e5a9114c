-- GCRA rate limit: one atomic check-and-update per request.
-- KEYS[1] the limiter's key (one per user or IP and action)
-- ARGV[1] emission interval in microseconds (period / limit)
-- ARGV[2] burst: how many requests may arrive at once (the limit)
-- Returns {allowed (1/0), retry after in ms}. Uses the server's clock, so
-- gateways with skewed clocks still share one consistent window.
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now_us)
if tat < now_us then
  tat = now_us
end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now_us < allow_at then
  return {0, math.ceil((allow_at - now_us) / 1000)}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now_us) / 1000) + 1)
return {1, 0}
