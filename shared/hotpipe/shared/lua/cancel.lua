-- A queued job is canceled at once (queued -> canceled); a running one is asked to stop at its next
-- step (flagged, its status unchanged: its worker ends it).
-- KEYS: the job layout (prelude).  ARGV: finished_at, ttl.
-- Returns the status found ('' when the job is unknown), 'canceled' when this call ended it.
local cur = job('status')
if not cur then return '' end
if cur == 'queued' then
  move(cur, 'canceled')
  put('finished_at', ARGV[1])
  expire(ARGV[2])
  announce('canceled')
  return 'canceled'
end
if cur == 'running' then
  put('cancel_requested', '1')
  announce('cancel_requested')
end
return cur
