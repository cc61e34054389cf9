-- Places one more participant of a room (see registry/mod.rs for the rules;
-- this mirrors `choose`).
-- KEYS[1] nodes ZSET, KEYS[2] room home, KEYS[3] room hosts ZSET
-- ARGV[1] key prefix, ARGV[2] max participants, ARGV[3] hosting ttl ms
-- Returns {info JSON, cascaded (0/1)}, or nil when no node can take it.
trim_zset(KEYS[1])
local max = tonumber(ARGV[2])

local candidates = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[1] .. 'node:' .. id,
    'participants', 'reserved', 'draining')
  if f[1] and f[3] == '0' then
    table.insert(candidates,
      {id = id, load = tonumber(f[1]) + tonumber(f[2] or '0')})
  end
end
if #candidates == 0 then
  return false
end

-- Least loaded among candidates accepted by `ok`, ties by smallest id.
local function best(ok)
  local found = nil
  for _, c in ipairs(candidates) do
    if ok(c) and (found == nil or c.load < found.load
        or (c.load == found.load and id_less(c.id, found.id))) then
      found = c
    end
  end
  return found
end
local function any() return true end

local home_id = redis.call('GET', KEYS[2])
local home = nil
for _, c in ipairs(candidates) do
  if c.id == home_id then
    home = c
  end
end

local chosen
if home and home.load < max then
  chosen = home
elseif home then
  chosen = best(function(c) return c.id ~= home.id and c.load < max end)
    or best(any)
else
  chosen = best(any)
  redis.call('SET', KEYS[2], chosen.id)
end
local cascaded = 0
if home and chosen.id ~= home.id then
  cascaded = 1
end

local node_key = ARGV[1] .. 'node:' .. chosen.id
redis.call('HINCRBY', node_key, 'reserved', 1)

local until_ms = now + tonumber(ARGV[3])
local current = redis.call('ZSCORE', KEYS[3], chosen.id)
if not current or tonumber(current) < until_ms then
  redis.call('ZADD', KEYS[3], int(until_ms), chosen.id)
end
touch_home(KEYS[2], trim_zset(KEYS[3]))

return {redis.call('HGET', node_key, 'info'), cascaded}
