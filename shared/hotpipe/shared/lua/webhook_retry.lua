-- Schedule the next try of a webhook event still owed (one already dropped stays dropped).
-- KEYS: due, events.  ARGV: id, event JSON, delay ms.  Returns 1 when scheduled, else 0.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[3]), ARGV[1])
return 1
