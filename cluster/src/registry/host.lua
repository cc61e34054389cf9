-- Marks a node as hosting a room.
-- KEYS[1] room home, KEYS[2] room hosts ZSET; ARGV[1] node id, ARGV[2] ttl ms
redis.call('ZADD', KEYS[2], int(now + tonumber(ARGV[2])), ARGV[1])
touch_home(KEYS[1], trim_zset(KEYS[2]))
return 1
