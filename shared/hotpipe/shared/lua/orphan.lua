-- Take over a requeue outbox entry whose publisher has been silent too long (it died between requeue
-- and publish): re-stamp it and return {stamp, family, spec} to publish.  {} when fresh or gone; the
-- entry is dropped when the job is no longer queued (a message reached it, or it was canceled).
-- KEYS: job, requeues.  ARGV: job id, silence ms.
local now = now_ms()
local stamp = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not stamp or tonumber(stamp) + tonumber(ARGV[2]) > now then return {} end
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {}
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
local family, spec = unpack(redis.call('HMGET', KEYS[1], 'family', 'spec'))
return {now, family, spec or ''}
