-- Lists live nodes. KEYS[1] nodes ZSET; ARGV[1] key prefix.
-- Returns the info JSON of each live node (unsorted).
trim_zset(KEYS[1])
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local info = redis.call('HGET', ARGV[1] .. 'node:' .. id, 'info')
  if info then
    table.insert(out, info)
  end
end
return out
