-- Count one request of a checkpoint in its family's decayed counts (hotpipe.shared.popularity).
-- KEYS: the family's set, its epoch.
-- ARGV: checkpoint id, half-life s, rescale after (half-lives), forget below, most members,
--       expire after (ms).
local now = now_s()
local half_life = tonumber(ARGV[2])
local epoch = tonumber(redis.call('GET', KEYS[2]))
if not epoch then
  epoch = now
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], string.format('%.6f', epoch))
end
local age = math.max(0, (now - epoch) / half_life)
if age > tonumber(ARGV[3]) then
  local factor = 2 ^ (-age)
  local scored = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #scored, 2 do
    local count = tonumber(scored[i + 1]) * factor
    if count < tonumber(ARGV[4]) then
      redis.call('ZREM', KEYS[1], scored[i])
    else
      redis.call('ZADD', KEYS[1], string.format('%.17g', count), scored[i])
    end
  end
  epoch, age = now, 0
  redis.call('SET', KEYS[2], string.format('%.6f', epoch))
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5]) + 1
  if over > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
  end
end
redis.call('ZINCRBY', KEYS[1], string.format('%.17g', 2 ^ age), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
