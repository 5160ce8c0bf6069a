-- A job that never started and is past its queue deadline ends failed (queued -> failed,
-- deadline_exceeded).  The deadline entry is dropped once it can no longer apply.
-- KEYS: the job layout (prelude), then queue deadlines.  ARGV: job id, finished_at, ttl, error JSON.
-- Returns 1 when this call ended the job, else 0.
local deadline = job('queue_deadline')
local pending = job('status') == 'queued' and job('attempt') == '0'
if not (pending and deadline) then
  redis.call('ZREM', KEYS[7], ARGV[1])
  return 0
end
if tonumber(deadline) > now_ms() then return 0 end
redis.call('ZREM', KEYS[7], ARGV[1])
move('queued', 'failed')
put('finished_at', ARGV[2], 'error', ARGV[4])
expire(ARGV[3])
announce('failed')
return 1
