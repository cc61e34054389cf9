-- Shared prologue of the registry scripts (prepended to each one).
--
-- Keys, all under the registry prefix P:
--   P..'nodes'              ZSET node id -> expiry (ms of Redis's clock)
--   P..'node:'..id          HASH info (JSON NodeInfo), participants,
--                           draining (0/1), reserved; expires with the node
--   P..'room:'..r..':home'  STRING id of the room's home node
--   P..'room:'..r..':hosts' ZSET hosting node id -> expiry (ms)
-- A room's two keys expire together, when its latest hosting entry does.

-- Redis 3.2-4.x replicate scripts verbatim unless told to replicate effects;
-- without this, a write after the non-deterministic TIME call is rejected.
-- On Redis >= 5 this is a no-op (and deprecated).
if redis.replicate_commands then
  redis.replicate_commands()
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- '%.0f' keeps all digits (tostring would round to 14 significant digits).
local function int(x)
  return string.format('%.0f', x)
end

-- Byte-wise string order, like Rust's (Lua's '<' follows the server locale).
local function id_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end

-- Drops expired members of a ZSET scored by expiry, then makes the key
-- expire with its latest member. Returns that expiry, or nil when empty.
local function trim_zset(key)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now))
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] == nil then
    return nil
  end
  local expiry = tonumber(top[2])
  redis.call('PEXPIREAT', key, int(expiry))
  return expiry
end

-- Makes a room's home key live at least as long as its hosting set.
local function touch_home(home_key, hosts_expiry)
  if hosts_expiry == nil or redis.call('EXISTS', home_key) == 0 then
    return
  end
  local pttl = redis.call('PTTL', home_key)
  if pttl < 0 or now + pttl < hosts_expiry then
    redis.call('PEXPIREAT', home_key, int(hosts_expiry))
  end
end

-- Whether node `id` is alive per the nodes ZSET.
local function alive(nodes_key, id)
  local expiry = redis.call('ZSCORE', nodes_key, id)
  return expiry and tonumber(expiry) > now
end
