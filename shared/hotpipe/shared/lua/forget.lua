-- Drop an idempotency key only while it names the given job.
-- KEYS: the idempotency key.  ARGV: "{job id} " (its value's prefix).
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, #ARGV[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
