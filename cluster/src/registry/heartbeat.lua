-- Registers or refreshes a node, resetting its reservations.
-- KEYS[1] nodes ZSET, KEYS[2] the node's hash
-- ARGV[1] id, ARGV[2] ttl ms, ARGV[3] info JSON, ARGV[4] participants,
-- ARGV[5] draining (0/1)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], int(now + ttl), ARGV[1])
trim_zset(KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'info', ARGV[3], 'participants', ARGV[4],
  'draining', ARGV[5], 'reserved', 0)
redis.call('PEXPIREAT', KEYS[2], int(now + ttl))
return 1
