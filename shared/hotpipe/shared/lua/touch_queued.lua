-- A swept job's message was published again: restart its clock in the queued-jobs set, if it is
-- still queued (a member whose job moved on or is gone is dropped).
-- KEYS: job, queued jobs.  ARGV: job id.  Returns 1 when restarted, else 0.
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[2], 'XX', now_ms(), ARGV[1])
return 1
