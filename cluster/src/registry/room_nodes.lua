-- Lists the live nodes hosting a room.
-- KEYS[1] nodes ZSET, KEYS[2] room hosts ZSET; ARGV[1] key prefix
-- Returns the info JSON of each (unsorted).
trim_zset(KEYS[2])
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if alive(KEYS[1], id) then
    local info = redis.call('HGET', ARGV[1] .. 'node:' .. id, 'info')
    if info then
      table.insert(out, info)
    end
  end
end
return out
