-- Take a running job back: a cancel asked for is honoured (running -> canceled); a job that used its
-- last attempt ends failed (running -> failed); otherwise it is queued again (running -> queued),
-- attempt count kept, and enters the requeue outbox until its message is published.
-- KEYS: the job layout (prelude), then leases, requeues.
-- ARGV: job id, owner attempt ('' = the reaper: only once the lease has lapsed),
--       max attempts ('' = no cap), ttl, finished_at, worker_lost error JSON.
-- Returns {outcome, family, stamp, spec}, outcome '' when there was nothing to take back (renewed,
-- finished, not the owner).
local id, now = ARGV[1], now_ms()
if job('status') ~= 'running' then
  redis.call('ZREM', KEYS[7], id)  -- a lease left by a deleted record
  return {''}
end
local attempt = job('attempt')
if ARGV[2] == '' then
  local deadline = redis.call('ZSCORE', KEYS[7], id)
  if deadline and tonumber(deadline) > now then return {''} end
elseif ARGV[2] ~= attempt then
  return {''}
end
local outcome = 'queued'
if job('cancel_requested') == '1' then
  outcome = 'canceled'
elseif ARGV[3] ~= '' and tonumber(attempt) >= tonumber(ARGV[3]) then
  outcome = 'failed'
end
if outcome == 'queued' then drop('routed_count') end  -- its message goes to the family queue now
move('running', outcome)
redis.call('ZREM', KEYS[7], id)
if outcome == 'queued' then
  put('stage', 'queued', 'queued_at', ARGV[5])
  drop('progress', 'worker', 'loading_at', 'running_at', 'uploading_at')
  redis.call('ZADD', KEYS[8], now, id)
else
  put('finished_at', ARGV[5])
  if outcome == 'failed' then put('error', ARGV[6]) end
  expire(ARGV[4])
end
announce(outcome)
return {outcome, job('family'), now, job('spec') or ''}
