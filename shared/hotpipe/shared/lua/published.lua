-- A requeued job's message is out: drop its outbox entry, unless a later requeue of the same job has
-- stamped it anew (that one still owes a message).
-- KEYS: requeues.  ARGV: job id, stamp.
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-1') == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
