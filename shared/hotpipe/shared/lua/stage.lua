-- The owning attempt moves to a new stage (loading -> running -> uploading) and renews its lease, so
-- it doubles as the ownership check before puts.
-- KEYS: the job layout (prelude), then leases.  ARGV: fence attempt, stage, timestamp, lease ms.
-- Returns 1, or 0 when the attempt no longer owns the job.
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[7], now_ms() + tonumber(ARGV[4]), redis.call('HGET', KEYS[1], 'id'))
redis.call('HSET', KEYS[1], 'stage', ARGV[2], ARGV[2] .. '_at', ARGV[3])
announce('stage')
return 1
