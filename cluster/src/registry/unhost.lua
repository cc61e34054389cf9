-- Marks a node as no longer hosting a room.
-- KEYS[1] room hosts ZSET; ARGV[1] node id
redis.call('ZREM', KEYS[1], ARGV[1])
trim_zset(KEYS[1])
return 1
