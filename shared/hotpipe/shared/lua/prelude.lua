-- The one prelude every hotpipe script starts with (hotpipe.shared.scripts puts it in front of each).
--
-- Above it, scripts.py writes ALLOWED, generated from status.ALLOWED_FROM: ALLOWED[from][to] is true
-- when a job may go from status `from` to status `to`.  It is the only transition table; `move` below
-- refuses any pair not in it, and `move` is the only code that writes a job's status.
--
-- Job scripts (those that call reindex/expire/webhook/announce/move) take the same first six KEYS:
--   KEYS[1] the job's hash        KEYS[2] its events channel      KEYS[3] the queued-jobs set
--   KEYS[4] the index expiry set  KEYS[5] the webhook due set     KEYS[6] the webhook events hash
-- and their own keys from KEYS[7] on.  Exceptions: a tenant's per-status index sets are derived here at
-- run time from the record's field `index` (`index .. ':' .. status`, keys.jobs_index's format), and the
-- family's and a worker queue's queued counts are the record's fields `queued_count` and `routed_count`
-- (keys.queued_count, keys.routed_count): the caller of a
-- transition knows the job id, not its tenant or family, and reading the record first would cost a
-- round trip and race with the script.

-- Redis's clock, read once per script run (a script is one atomic step: one instant is enough).
local CLOCK = nil
local function clock()
  if not CLOCK then CLOCK = redis.call('TIME') end
  return CLOCK
end

-- Redis's clock in ms: lease deadlines, outbox stamps and buckets never depend on a host's clock.
local function now_ms()
  local t = clock()
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Redis's clock in seconds, to the microsecond.
local function now_s()
  local t = clock()
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

-- The job record (KEYS[1]) as job scripts see it: read whole, once, by one HGETALL on first use;
-- writes go through `put` (and `drop`), which keep that view current, and `put` holds them until
-- `flush` writes them all with one HSET.  `announce` flushes first and publishes the view itself, so
-- what is published is what is stored, without reading the hash again.  A missing field reads as
-- false, as HGET's nil does.
local JOB = nil
local PENDING = {}

local function job(name)
  if not JOB then
    JOB = {}
    local flat = redis.call('HGETALL', KEYS[1])
    for i = 1, #flat, 2 do JOB[flat[i]] = flat[i + 1] end
  end
  return JOB[name] or false
end

-- Set field/value pairs of the record (written by the next `flush`).
local function put(...)
  local pairs_ = {...}
  job('id')  -- the view is read before any write, so it never mixes old and new values
  for i = 1, #pairs_, 2 do
    local value = pairs_[i + 1]
    if type(value) == 'number' then value = string.format('%.17g', value) end  -- as HSET would store it
    JOB[pairs_[i]] = value
    PENDING[#PENDING + 1] = pairs_[i]
    PENDING[#PENDING + 1] = value
  end
end

-- Delete fields of the record (at once).
local function drop(...)
  job('id')
  for _, name in ipairs({...}) do JOB[name] = nil end
  redis.call('HDEL', KEYS[1], ...)
end

-- Write what `put` holds, in one HSET.
local function flush()
  if #PENDING > 0 then
    redis.call('HSET', KEYS[1], unpack(PENDING))
    PENDING = {}
  end
end

-- The record as it now stands, as HGETALL's flat list.
local function record()
  job('id')
  local flat = {}
  for name, value in pairs(JOB) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  return flat
end

-- Whether status.ALLOWED_FROM lets a job go from `from` to `to`.
local function may(from, to)
  return ALLOWED[from] ~= nil and ALLOWED[from][to] == true
end

-- Which webhook event (the record's `webhook_events` names them) each announcement is.
local HOOK_OF = {running = 'start', progress = 'progress', succeeded = 'completed', failed = 'completed',
                 canceled = 'completed'}

-- Keep the queued-jobs set, the family's queued count and the tenant's per-status index sets in step
-- with a status change.  The record keeps its index score (`index_score`, written at create; records
-- older than that field are looked up in the index) and names its family's count (`queued_count`) and,
-- when it was routed to a worker's own queue, that queue's (`routed_count`).
local function reindex(from, to)
  if from == to then return end
  local id = job('id')
  if from == 'queued' or to == 'queued' then
    if to == 'queued' then redis.call('ZADD', KEYS[3], now_ms(), id) else redis.call('ZREM', KEYS[3], id) end
    for _, field in ipairs({'queued_count', 'routed_count'}) do
      local count = job(field)
      if count then redis.call('INCRBY', count, to == 'queued' and 1 or -1) end
    end
  end
  local base = job('index')
  if not base then return end
  local score = job('index_score') or redis.call('ZSCORE', base, id)
  if not score then return end
  redis.call('ZREM', base .. ':' .. from, id)
  redis.call('ZADD', base .. ':' .. to, score, id)
end

-- Set the job's status, checked against the table first, so a script can never write a pair that
-- status.ALLOWED_FROM does not list.  Scripts check their own preconditions before any write, so this
-- error is a bug's alarm, not a reply.
local function move(from, to)
  if not may(from, to) then
    return error('hotpipe: ' .. tostring(from) .. ' -> ' .. tostring(to) .. ' is not in status.ALLOWED_FROM')
  end
  put('status', to)
  reindex(from, to)
end

-- A finished record expires; its tenant's index entries are pruned when it does.
local function expire(ttl)
  redis.call('EXPIRE', KEYS[1], ttl)
  put('stage', 'finished')
  local base = job('index')
  if base then
    redis.call('ZADD', KEYS[4], now_ms() + tonumber(ttl) * 1000, job('id') .. ' ' .. base)
  end
end

-- Events the record's webhook asks for go to the webhook outbox in the same script as the change, so
-- a state change and its webhook event are one atomic write: none is lost, none is invented.
local function webhook(event)
  local kind = HOOK_OF[event]
  if not kind then return end
  local url = job('webhook_url')
  if not url then return end
  if not string.find(job('webhook_events') or '', ',' .. kind .. ',', 1, true) then return end
  local now = now_ms()
  if kind == 'progress' then
    local last = tonumber(job('webhook_progress_at') or '0')
    if now - last < tonumber(job('webhook_progress_ms') or '0') then return end
    put('webhook_progress_at', now)
  end
  local job_id = job('id')
  put('webhook_seq', tonumber(job('webhook_seq') or '0') + 1)
  flush()
  local id = job_id .. '.' .. job('webhook_seq')
  redis.call('HSET', KEYS[6], id, cjson.encode({id = id, job_id = job_id, event = kind, url = url, tries = 0,
                                                record = record()}))
  redis.call('ZADD', KEYS[5], now, id)
end

-- Publish an event with the record as it now stands (HGETALL's flat list), and owe its webhook.
-- Returns that record, for a script's reply.
local function announce(event)
  flush()
  local now = record()
  redis.call('PUBLISH', KEYS[2], cjson.encode({event = event, record = now}))
  webhook(event)
  return now
end
