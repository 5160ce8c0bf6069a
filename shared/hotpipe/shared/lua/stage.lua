-- The owning attempt moves to a new stage (loading -> running -> uploading) and renews its lease, so
-- it doubles as the ownership check before puts.  It may carry the attempt's last progress too (the
-- step callback leaves the final step's write to the `uploading` stage: one round trip, not two),
-- announced first as progress (event streams and progress webhooks see the last step), then the stage.
-- KEYS: the job layout (prelude), then leases.
-- ARGV: fence attempt, stage, timestamp, lease ms, progress JSON ('' or absent = none).
-- Returns 0 when the attempt no longer owns the job; else 1, or 2 when it carried progress and a
-- cancel was requested (what a progress write would have answered).
if job('status') ~= 'running' or job('attempt') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[7], now_ms() + tonumber(ARGV[4]), job('id'))
put('stage', ARGV[2], ARGV[2] .. '_at', ARGV[3])
local progress = ARGV[5] and ARGV[5] ~= ''
if progress then put('progress', ARGV[5]) end
if progress then announce('progress') end
announce('stage')
if progress and job('cancel_requested') == '1' then return 2 end
return 1
