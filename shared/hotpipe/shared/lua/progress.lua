-- The owning attempt records its progress (announced, and owed to the webhook, throttled there).
-- KEYS: the job layout (prelude).  ARGV: fence attempt, progress JSON.
-- Returns -1 when the attempt no longer owns the job (stop working), else 1 when a cancel was
-- requested, 0 otherwise.
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return -1 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
announce('progress')
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 1 end
return 0
