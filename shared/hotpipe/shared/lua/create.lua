-- Create a job: its record and its run message, written together or not at all.
-- KEYS: job, idempotency key (the job key again when none), queue deadlines, the run message's list
--       (the job key again when none), the queued-jobs set, the tenant's index, its `queued` index,
--       the family's queued count (the record's `queued_count` names it too), the routed count of the
--       worker queue it was routed to (`routed_count` in the record; the job key again when none).
-- ARGV: idempotency value ('' = none), its ttl, index score (µs), queue timeout ms ('' = none),
--       run message ('' = none), then field/value pairs, `id` first (`index` and `index_score` among
--       them: later scripts find the tenant's index and the job's place in it there).
-- Returns {'created'}, {'exists', fingerprint, tenant} when the id is taken, or
-- {'taken', "job fingerprint"} when the idempotency key already names a job.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists', redis.call('HGET', KEYS[1], 'fingerprint') or '', redis.call('HGET', KEYS[1], 'tenant') or ''}
end
if ARGV[1] ~= '' then
  local prior = redis.call('GET', KEYS[2])
  if prior then return {'taken', prior} end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
end
local id = ARGV[7]
local fields = {unpack(ARGV, 6)}
if ARGV[4] ~= '' then
  local deadline = now_ms() + tonumber(ARGV[4])
  fields[#fields + 1] = 'queue_deadline'
  fields[#fields + 1] = deadline
  redis.call('ZADD', KEYS[3], deadline, id)
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[6], ARGV[3], id)
redis.call('ZADD', KEYS[7], ARGV[3], id)
if ARGV[5] ~= '' then redis.call('LPUSH', KEYS[4], ARGV[5]) end
redis.call('ZADD', KEYS[5], now_ms(), id)
redis.call('INCR', KEYS[8])
if KEYS[9] ~= KEYS[1] then redis.call('INCR', KEYS[9]) end
return {'created'}
