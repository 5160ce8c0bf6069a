-- The owning attempt pushes its lease deadline out (the heartbeat, and the ownership check before
-- uploads).
-- KEYS: job, leases.  ARGV: attempt, lease ms.
-- Returns 1, or 0 when that attempt no longer owns the job.
if job('status') ~= 'running' or job('attempt') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), job('id'))
return 1
