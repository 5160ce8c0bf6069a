-- Write (or renew) a worker's registry record with its TTL, score its name by when the record
-- expires, and release the loader claims it holds for checkpoints now hot there.
-- KEYS: the worker's record, the workers set, then loader claims.  ARGV: record JSON, ttl ms, name.
-- Returns now (server ms).
local now = now_ms()
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[3] then
    redis.call('DEL', KEYS[i])
  end
end
return now
