-- Claim the due webhook events, each pushed out by the lease (an event whose dispatcher died comes
-- due again); entries whose event is gone are dropped.
-- KEYS: due, events.  ARGV: limit, lease ms.  Returns the claimed events (JSON).
local now = now_ms()
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
  local event = redis.call('HGET', KEYS[2], id)
  if event then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    table.insert(out, event)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
