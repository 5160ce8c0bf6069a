-- The owning attempt records its progress (announced, and owed to the webhook, throttled there).
-- KEYS: the job layout (prelude).  ARGV: fence attempt, progress JSON.
-- Returns -1 when the attempt no longer owns the job (stop working), else 1 when a cancel was
-- requested, 0 otherwise.
if job('status') ~= 'running' or job('attempt') ~= ARGV[1] then return -1 end
put('progress', ARGV[2])
announce('progress')
if job('cancel_requested') == '1' then return 1 end
return 0
