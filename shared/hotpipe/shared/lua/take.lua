-- A worker forming a batch takes one more queued job: removes that job's exact run message from its list
-- and claims the job (queued -> running, attempt + 1, lease, worker) in one step, so no crash can leave
-- a message gone and its job unclaimed, nor a job claimed twice (the message's later delivery would find
-- it running and stand down anyway).  The claim is the one transition.lua makes for the Celery task.
-- KEYS: the job layout (prelude), then leases, then the Redis list the message waits in.
-- ARGV: the message (Kombu's JSON, exactly as LRANGE read it), worker, timestamp, lease ms.
-- Returns {1, 'running', attempt, record}, or {0, why}: 'gone' (another worker took the message first),
-- the job's status when it is not queued, or 'deadline' (left for the ordinary claim, which fails it).
local cur = job('status')
if cur ~= 'queued' then return {0, cur or 'missing'} end
local attempt = job('attempt') or '0'
local queue_deadline = job('queue_deadline')
if attempt == '0' and queue_deadline and tonumber(queue_deadline) <= now_ms() then return {0, 'deadline'} end
if redis.call('LREM', KEYS[8], 1, ARGV[1]) == 0 then return {0, 'gone'} end
attempt = tostring(tonumber(attempt) + 1)
move(cur, 'running')
put('attempt', attempt, 'started_at', ARGV[3], 'worker', ARGV[2], 'stage', 'loading', 'loading_at', ARGV[3])
redis.call('ZADD', KEYS[7], now_ms() + tonumber(ARGV[4]), job('id'))
return {1, 'running', attempt, announce('running')}
