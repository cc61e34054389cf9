-- GCRA rate limit check, executed atomically by Redis.
--
-- KEYS[1]  the key holding the theoretical arrival time (TAT), in microseconds
--          of Redis's own clock
-- ARGV[1]  emission interval T, in whole microseconds (>= 1)
-- ARGV[2]  burst (>= 1)
--
-- Returns {allowed (0/1), remaining, retry_after_ms}.

-- Redis 3.2-4.x replicate scripts verbatim unless told to replicate effects;
-- without this, a write after the non-deterministic TIME call is rejected.
-- On Redis >= 5 this is a no-op (and deprecated).
if redis.replicate_commands then
  redis.replicate_commands()
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)

local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local ahead = tat - now

if ahead > tolerance then
  -- Not counted; the TAT stays as it is.
  return {0, 0, math.ceil((ahead - tolerance) / 1000)}
end

local new_tat = tat + interval
-- The TAT is only relevant until it passes, so let the key expire then.
-- '%.0f' keeps all digits (tostring would round to 14 significant digits).
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((tolerance - ahead) / interval), 0}
