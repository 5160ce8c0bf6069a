-- The generic guarded transition: claim (queued -> running) and the worker's ends
-- (running -> succeeded / failed / canceled), or a never-started job failed (queued -> failed).
-- KEYS: the job layout (prelude), then leases.
-- ARGV: target, fence attempt ('' = none: only a queued job may move), bump attempt ('1'/'0'),
--       ttl seconds ('' = none), lease ms, then field/value pairs.
-- The move must be in status.ALLOWED_FROM; a fenced write (a running attempt's) acts only on the
-- attempt it names and never on a queued job, an unfenced one only on a queued job.
-- Returns {ok, status, attempt, record}.  Entering running takes a lease; any other target drops it,
-- so "running" and "holds a lease" never disagree.  A job that never started and is past its queue
-- deadline is not claimed: the reply is {0, 'queued', attempt, 'deadline'} and the caller fails it.
local target, fence = ARGV[1], ARGV[2]
local cur = job('status')
if not cur then return {0, '', '0'} end
local attempt = job('attempt') or '0'
local ok = may(cur, target) and ((fence == '') == (cur == 'queued'))
if not ok or (fence ~= '' and fence ~= attempt) then return {0, cur, attempt} end
local queue_deadline = job('queue_deadline')
if target == 'running' and attempt == '0' and queue_deadline and tonumber(queue_deadline) <= now_ms() then
  return {0, cur, attempt, 'deadline'}
end
if ARGV[3] == '1' then attempt = tostring(tonumber(attempt) + 1) end
move(cur, target)
put('attempt', attempt)
if #ARGV > 5 then put(unpack(ARGV, 6)) end
if ARGV[4] ~= '' then expire(ARGV[4]) end
if target == 'running' then
  redis.call('ZADD', KEYS[7], now_ms() + tonumber(ARGV[5]), job('id'))
else
  redis.call('ZREM', KEYS[7], job('id'))
end
return {1, target, attempt, announce(target)}
