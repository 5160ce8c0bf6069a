-- Take one token from a tenant's token bucket (hotpipe.producer.admission), on Redis's clock.
-- KEYS: the bucket.  ARGV: rate per second, burst.
-- Returns 0 when granted, else the milliseconds until a token will be there.  The bucket expires
-- once it would be full again, so idle tenants cost no memory.
local now = now_ms()
local rate, burst = tonumber(ARGV[1]) / 1000, tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1000)
return wait
