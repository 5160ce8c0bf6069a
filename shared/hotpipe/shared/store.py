"""The job status store: one Redis hash per job, changed only by guarded transitions.

Every transition is one Lua script, so check-and-set is atomic on the server: the
current status must be one the target may be entered from, and writes made by a
worker carry the attempt number they claimed — a fencing token — so an attempt that
was superseded can never overwrite the newer attempt's record.  Each change is
published on the job's channel with the whole record, which is what waiters listen to:
a waiter wakes up holding the new record, without reading it back.

A running job holds a lease: its id in one sorted set scored by a deadline on Redis's
own clock (so no host's clock matters).  Claiming sets it, the owning attempt's
heartbeat renews it, every other status drops it.  A reaper requeues a job whose lease
lapsed (``running -> queued``, attempt count kept) and notes it in a requeue outbox
until its message is published, so a reaper that dies in between loses nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis
import redis.asyncio as aioredis

from hotpipe.shared import keys
from hotpipe.shared.job import JobError, JobRecord, JobResult, Progress, Stage, Task
from hotpipe.shared.messages import RunMessage
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.status import ALLOWED_FROM, TERMINAL, Status, TransitionError

#: error code of a job whose worker was lost on its last allowed attempt
WORKER_LOST = "worker_lost"
#: error code of a job that did not start before its queue deadline
DEADLINE_EXCEEDED = "deadline_exceeded"

# Redis's clock in ms: lease deadlines and outbox stamps never depend on a host's clock.
_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Shared by every script whose KEYS[1] is a job and KEYS[2] its channel.  A record keeps the
# key of its tenant's index (field ``index``); the per-status sets append ``:{status}``
# (``keys.jobs_index``).  A finished record's index entries are pruned when it expires.
# Events a record's webhook asks for go to the webhook outbox in the same script, so a
# state change and its webhook event are one atomic write: none is lost, none is invented.
_LIB = _NOW + f"""
local EXPIRING, HOOK_DUE, HOOK_EVENTS = '{keys.index_expiry()}', '{keys.webhook_due()}', '{keys.webhook_events()}'
local QUEUED = '{keys.queued_jobs()}'
local HOOK_OF = {{running = 'start', progress = 'progress', succeeded = 'completed', failed = 'completed',
                 canceled = 'completed'}}
""" + """
local function reindex(from, to)
  if from ~= to and (from == 'queued' or to == 'queued') then
    local job_id = redis.call('HGET', KEYS[1], 'id')
    if to == 'queued' then redis.call('ZADD', QUEUED, now_ms(), job_id) else redis.call('ZREM', QUEUED, job_id) end
  end
  local base = redis.call('HGET', KEYS[1], 'index')
  if not base or from == to then return end
  local id = redis.call('HGET', KEYS[1], 'id')
  local score = redis.call('ZSCORE', base, id)
  if not score then return end
  redis.call('ZREM', base .. ':' .. from, id)
  redis.call('ZADD', base .. ':' .. to, score, id)
end

local function expire(ttl)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('HSET', KEYS[1], 'stage', 'finished')
  local base = redis.call('HGET', KEYS[1], 'index')
  if base then
    redis.call('ZADD', EXPIRING, now_ms() + tonumber(ttl) * 1000, redis.call('HGET', KEYS[1], 'id') .. ' ' .. base)
  end
end

local function webhook(event)
  local kind = HOOK_OF[event]
  if not kind then return end
  local url = redis.call('HGET', KEYS[1], 'webhook_url')
  if not url then return end
  if not string.find(redis.call('HGET', KEYS[1], 'webhook_events') or '', ',' .. kind .. ',', 1, true) then return end
  local now = now_ms()
  if kind == 'progress' then
    local last = tonumber(redis.call('HGET', KEYS[1], 'webhook_progress_at') or '0')
    if now - last < tonumber(redis.call('HGET', KEYS[1], 'webhook_progress_ms') or '0') then return end
    redis.call('HSET', KEYS[1], 'webhook_progress_at', now)
  end
  local job_id = redis.call('HGET', KEYS[1], 'id')
  local id = job_id .. '.' .. redis.call('HINCRBY', KEYS[1], 'webhook_seq', 1)
  redis.call('HSET', HOOK_EVENTS, id, cjson.encode({id = id, job_id = job_id, event = kind, url = url, tries = 0,
                                                    record = redis.call('HGETALL', KEYS[1])}))
  redis.call('ZADD', HOOK_DUE, now, id)
end

-- Publish an event with the record as it now stands (HGETALL's flat list).
local function announce(event)
  redis.call('PUBLISH', KEYS[2], cjson.encode({event = event, record = redis.call('HGETALL', KEYS[1])}))
  webhook(event)
end
"""

# KEYS: job, idempotency key (the job key again when none), queue deadlines, the run message's
#       list (the job key again when none), the queued-jobs set.
# ARGV: idempotency value ('' = none), its ttl, index score (µs), queue timeout ms ('' = none),
#       run message ('' = none), then field/value pairs (``index`` among them).
# Returns {'created'}, {'exists', fingerprint, tenant} when the id is taken, or
# {'taken', "job fingerprint"} when the idempotency key already names a job.
# The record and its run message are written together or not at all.
_CREATE = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists', redis.call('HGET', KEYS[1], 'fingerprint') or '', redis.call('HGET', KEYS[1], 'tenant') or ''}
end
if ARGV[1] ~= '' then
  local prior = redis.call('GET', KEYS[2])
  if prior then return {'taken', prior} end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
local base, id = redis.call('HGET', KEYS[1], 'index'), redis.call('HGET', KEYS[1], 'id')
if base then
  redis.call('ZADD', base, ARGV[3], id)
  redis.call('ZADD', base .. ':queued', ARGV[3], id)
end
if ARGV[4] ~= '' then
  local deadline = now_ms() + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'queue_deadline', deadline)
  redis.call('ZADD', KEYS[3], deadline, id)
end
if ARGV[5] ~= '' then redis.call('LPUSH', KEYS[4], ARGV[5]) end
redis.call('ZADD', KEYS[5], now_ms(), id)
return {'created'}
"""

# KEYS: job, events, leases.
# ARGV: target, allowed-from (comma list), fence attempt ('' = none), bump attempt ('1'/'0'),
#       ttl seconds ('' = none), lease ms, then field/value pairs.
# Returns {ok, status, attempt, record}.  Entering running takes a lease; any other
# target drops it, so "running" and "holds a lease" never disagree.
# A job that never started and is past its queue deadline is not claimed: it is failed
# (``expire_queued``) instead, so the reply is {0, 'queued', attempt, 'deadline'}.
_TRANSITION = _LIB + """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return {0, '', '0'} end
local attempt = redis.call('HGET', KEYS[1], 'attempt') or '0'
local ok = false
for s in string.gmatch(ARGV[2], '[^,]+') do if s == cur then ok = true end end
if not ok or (ARGV[3] ~= '' and ARGV[3] ~= attempt) then return {0, cur, attempt} end
local queue_deadline = redis.call('HGET', KEYS[1], 'queue_deadline')
if ARGV[1] == 'running' and attempt == '0' and queue_deadline and tonumber(queue_deadline) <= now_ms() then
  return {0, cur, attempt, 'deadline'}
end
if ARGV[4] == '1' then attempt = tostring(tonumber(attempt) + 1) end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'attempt', attempt)
if #ARGV > 6 then redis.call('HSET', KEYS[1], unpack(ARGV, 7)) end
reindex(cur, ARGV[1])
if ARGV[5] ~= '' then expire(ARGV[5]) end
local id = redis.call('HGET', KEYS[1], 'id')
if ARGV[1] == 'running' then
  redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[6]), id)
else
  redis.call('ZREM', KEYS[3], id)
end
announce(ARGV[1])
return {1, ARGV[1], attempt, redis.call('HGETALL', KEYS[1])}
"""

# KEYS: job, leases.  ARGV: attempt, lease ms.  The owning attempt pushes its deadline
# out (the heartbeat, and the ownership check before uploads); 0: it no longer owns the job.
_RENEW = _NOW + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), redis.call('HGET', KEYS[1], 'id'))
return 1
"""

# KEYS: job, events, leases, requeues.
# ARGV: job id, owner attempt ('' = the reaper: only once the lease has lapsed),
#       max attempts ('' = no cap), ttl, finished_at, worker_lost error JSON.
# Takes a running job back: a cancel asked for is honoured (canceled); a job that used
# its last attempt ends failed; otherwise it is queued again, attempt count kept, and
# enters the outbox until its message is published.  Returns {outcome, family, stamp, spec}
# with outcome '' when there was nothing to take back (renewed, finished, not the owner).
_REQUEUE = _LIB + """
local id, now = ARGV[1], now_ms()
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  redis.call('ZREM', KEYS[3], id)  -- a lease left by a deleted record
  return {''}
end
local attempt = redis.call('HGET', KEYS[1], 'attempt')
if ARGV[2] == '' then
  local deadline = redis.call('ZSCORE', KEYS[3], id)
  if deadline and tonumber(deadline) > now then return {''} end
elseif ARGV[2] ~= attempt then
  return {''}
end
redis.call('ZREM', KEYS[3], id)
local outcome = 'queued'
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  outcome = 'canceled'
elseif ARGV[3] ~= '' and tonumber(attempt) >= tonumber(ARGV[3]) then
  outcome = 'failed'
end
if outcome == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'stage', 'queued', 'queued_at', ARGV[5])
  redis.call('HDEL', KEYS[1], 'progress', 'worker', 'loading_at', 'running_at', 'uploading_at')
  redis.call('ZADD', KEYS[4], now, id)
else
  redis.call('HSET', KEYS[1], 'status', outcome, 'finished_at', ARGV[5])
  if outcome == 'failed' then redis.call('HSET', KEYS[1], 'error', ARGV[6]) end
  expire(ARGV[4])
end
reindex('running', outcome)
announce(outcome)
return {outcome, redis.call('HGET', KEYS[1], 'family'), now, redis.call('HGET', KEYS[1], 'spec') or ''}
"""

# KEYS: requeues.  ARGV: job id, stamp.  The message is out: drop the outbox entry,
# unless a later requeue of the same job has stamped it anew (that one still owes).
_PUBLISHED = """
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-1') == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
"""

# KEYS: job, requeues.  ARGV: job id, silence ms.  Take over an outbox entry whose
# publisher has been silent that long (it died between requeue and publish): re-stamp it
# and return {stamp, family, spec} to publish.  {} when fresh or gone; dropped when the job is
# no longer queued (a message reached it, or it was canceled).
_ORPHAN = _NOW + """
local now = now_ms()
local stamp = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not stamp or tonumber(stamp) + tonumber(ARGV[2]) > now then return {} end
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {}
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
return {now, redis.call('HGET', KEYS[1], 'family'), redis.call('HGET', KEYS[1], 'spec') or ''}
"""

# KEYS: a sorted set scored in server ms.  ARGV: age ms, limit.  Members scored at least
# ``age`` ms ago (age 0 on the leases: deadlines that have passed).
_DUE = _NOW + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
"""

# ARGV: fence attempt, progress JSON.  Returns -1 when the attempt no longer owns the
# job (stop working), else 1 when a cancel was requested, 0 otherwise.
_PROGRESS = _LIB + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return -1 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
announce('progress')
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 1 end
return 0
"""

# A queued job is canceled at once; a running one is asked to stop at its next step.
_CANCEL = _LIB + """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return '' end
if cur == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[1])
  reindex('queued', 'canceled')
  expire(ARGV[2])
  announce('canceled')
  return 'canceled'
end
if cur == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  announce('cancel_requested')
end
return cur
"""


# KEYS: job, events, leases.  ARGV: fence attempt, stage, timestamp, lease ms.  The owning
# attempt moves to a new stage (loading -> running -> uploading) and renews its lease, so
# it doubles as the ownership check before puts; 0 when it no longer owns the job.
_STAGE = _LIB + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[4]), redis.call('HGET', KEYS[1], 'id'))
redis.call('HSET', KEYS[1], 'stage', ARGV[2], ARGV[2] .. '_at', ARGV[3])
announce('stage')
return 1
"""

# KEYS: job, events, queue deadlines.  ARGV: job id, finished_at, ttl, error JSON.
# A job that never started and is past its queue deadline ends failed (deadline_exceeded);
# 1 when this call ended it.  The deadline entry is dropped once it can no longer apply.
_EXPIRE_QUEUED = _LIB + """
local deadline = redis.call('HGET', KEYS[1], 'queue_deadline')
local pending = redis.call('HGET', KEYS[1], 'status') == 'queued' and redis.call('HGET', KEYS[1], 'attempt') == '0'
if not (pending and deadline) then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
if tonumber(deadline) > now_ms() then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[2], 'error', ARGV[4])
reindex('queued', 'failed')
expire(ARGV[3])
announce('failed')
return 1
"""

# KEYS: index expiry.  ARGV: limit, every status (comma list), the job key prefix.
# Drops expired records' entries from their tenant's indexes (a record re-created under the
# same id since keeps its entries).  Returns how many entries were due.
_PRUNE = _NOW + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local sp = string.find(member, ' ', 1, true)
  local id, base = string.sub(member, 1, sp - 1), string.sub(member, sp + 1)
  if redis.call('EXISTS', ARGV[3] .. id) == 0 then
    redis.call('ZREM', base, id)
    for s in string.gmatch(ARGV[2], '[^,]+') do redis.call('ZREM', base .. ':' .. s, id) end
  end
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

# KEYS: an idempotency key.  ARGV: "{job id} " — drop the key only while it names that job.
# KEYS: job, queued jobs.  ARGV: job id.  A swept job's message was published again: restart its
# clock (if it is still queued; a member whose job moved on or is gone is dropped).
_TOUCH_QUEUED = _NOW + """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[2], 'XX', now_ms(), ARGV[1])
return 1
"""

_FORGET = """
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, #ARGV[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""


@dataclass(frozen=True)
class JobOptions:
    """What a submit asks of the store beyond the record: tenant, idempotency, deadline, webhook."""

    tenant: str = keys.DEFAULT_TENANT
    #: digest of the request, compared when a key or client-chosen id comes back
    fingerprint: str = ""
    #: digest of the caller's ``Idempotency-Key``, and how long it names the job
    idempotency_key: str | None = None
    idempotency_ttl_s: int = 24 * 3600
    queue_timeout_s: float | None = None
    timeout_s: float | None = None
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] = ()
    webhook_progress_s: float = 1.0

    def record_fields(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        if self.queue_timeout_s is not None:
            fields["queue_timeout_s"] = repr(self.queue_timeout_s)
        if self.timeout_s is not None:
            fields["timeout_s"] = repr(self.timeout_s)
        if self.webhook_url:
            fields.update(webhook_url=self.webhook_url, webhook_events="," + ",".join(self.webhook_events) + ",",
                          webhook_progress_ms=str(round(self.webhook_progress_s * 1000)))
        return fields


class JobExists(TransitionError):
    """The job id is taken; ``fingerprint`` and ``tenant`` say by what request and whom."""

    def __init__(self, job_id: str, fingerprint: str, tenant: str):
        super().__init__(job_id, None, Status.QUEUED, frozenset(), detail=f"job {job_id} already exists")
        self.fingerprint, self.tenant = fingerprint, tenant


class KeyTaken(TransitionError):
    """The idempotency key already names job ``job_id``, created from a request with ``fingerprint``."""

    def __init__(self, job_id: str, fingerprint: str):
        super().__init__(job_id, None, Status.QUEUED, frozenset(),
                         detail=f"the idempotency key already names job {job_id}")
        self.fingerprint = fingerprint


@dataclass(frozen=True)
class Cursor:
    """Where a listing page ended: the last entry's score (creation time, µs) and job id."""

    score: int
    job_id: str

    def encode(self) -> str:
        return f"{self.score}:{self.job_id}"


@dataclass(frozen=True)
class StoredJob:
    """A job as the worker needs it: the public record plus the private run spec."""

    record: JobRecord
    spec: JobSpec
    cancel_requested: bool
    worker: str | None = None  # who runs the current attempt (set at claim)
    tenant: str = keys.DEFAULT_TENANT
    fingerprint: str = ""  # of the request that created it (idempotent replays compare it)


@dataclass(frozen=True)
class Requeue:
    """What taking a running job back did: requeued it (publish a message!) or ended it."""

    job_id: str
    outcome: Literal["queued", "canceled", "failed"]
    family: str
    stamp: int  # the outbox entry's stamp; hand it to ``requeue_published``
    priority: int  # the job's own (from its spec), so the new message queues like the first


def _priority(spec: str) -> int:
    return JobSpec.model_validate_json(spec).priority


def _ts(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _ts_ms(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(value) / 1000, UTC) if value else None


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _json(value: str | None) -> Any:
    return json.loads(value) if value else None


class JobStore:
    """Reads and guarded writes of job records; the only code that touches job hashes."""

    def __init__(self, client: redis.Redis, record_ttl_s: int, lease_s: float = 30.0):
        self.redis = client
        self.record_ttl_s = record_ttl_s
        self.lease_ms = round(lease_s * 1000)
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._progress = client.register_script(_PROGRESS)
        self._cancel = client.register_script(_CANCEL)
        self._renew = client.register_script(_RENEW)
        self._requeue = client.register_script(_REQUEUE)
        self._published = client.register_script(_PUBLISHED)
        self._orphan = client.register_script(_ORPHAN)
        self._due = client.register_script(_DUE)
        self._stage = client.register_script(_STAGE)
        self._expire_queued = client.register_script(_EXPIRE_QUEUED)
        self._prune = client.register_script(_PRUNE)
        self._forget = client.register_script(_FORGET)
        self._touch_queued = client.register_script(_TOUCH_QUEUED)

    # -- producer side ----------------------------------------------------------------
    def create(self, job_id: str, *, family: str, pipeline: str, checkpoint: str, revision: str | None,
               task: Task, spec: JobSpec, options: JobOptions | None = None,
               message: RunMessage | None = None) -> JobRecord:
        """Write a new ``queued`` record, indexed for its tenant, and push its run ``message``
        (``shared/hotpipe/shared/messages.py``) in the same script; return the record.

        Refuses to overwrite an existing job (``JobExists``) and, with an idempotency key,
        to create a second job for it (``KeyTaken``); either way nothing is written or pushed.
        """
        opts = options or JobOptions()
        now = time.time()
        fields = {
            "id": job_id, "status": Status.QUEUED.value, "attempt": "0", "family": family,
            "pipeline": pipeline, "checkpoint": checkpoint, "revision": revision or "",
            "task": task.value, "created_at": repr(now), "spec": spec.model_dump_json(),
            "tenant": opts.tenant, "index": keys.jobs_index(opts.tenant), "fingerprint": opts.fingerprint,
            "stage": "queued", "queued_at": repr(now), **opts.record_fields(),
        }
        idem_key = keys.idempotency(opts.tenant, opts.idempotency_key) if opts.idempotency_key else keys.job(job_id)
        queue_ms = "" if opts.queue_timeout_s is None else str(round(opts.queue_timeout_s * 1000))
        argv: list[str | int] = [f"{job_id} {opts.fingerprint}" if opts.idempotency_key else "", opts.idempotency_ttl_s,
                round(now * 1e6), queue_ms, message.payload if message else "",
                *(x for pair in fields.items() for x in pair)]
        reply = self._create(keys=[keys.job(job_id), idem_key, keys.queue_deadlines(),
                                   message.list_key if message else keys.job(job_id), keys.queued_jobs()],
                            args=argv)
        if reply[0] == "exists":
            raise JobExists(job_id, reply[1], reply[2])
        if reply[0] == "taken":
            prior, _, fingerprint = reply[1].partition(" ")
            raise KeyTaken(prior, fingerprint)
        return _record(fields)

    def idempotent_job(self, tenant: str, key_digest: str) -> tuple[str, str] | None:
        """(job id, request fingerprint) an idempotency key already names, if any."""
        value: str | None = self.redis.get(keys.idempotency(tenant, key_digest))  # type: ignore[assignment]
        if not value:
            return None
        job_id, _, fingerprint = value.partition(" ")
        return job_id, fingerprint

    def forget_idempotency(self, tenant: str, key_digest: str, job_id: str) -> None:
        """Drop an idempotency key if it still names ``job_id`` (its job failed to enqueue or expired)."""
        self._forget(keys=[keys.idempotency(tenant, key_digest)], args=[job_id + " "])

    def set_stage(self, job_id: str, attempt: int, stage: str) -> bool:
        """The owning attempt enters ``stage`` (``running``, ``uploading``) and renews its lease
        (as ``renew`` does); False if it no longer owns the job."""
        reply = self._stage(keys=[keys.job(job_id), keys.job_events(job_id), keys.leases()],
                            args=[attempt, stage, repr(time.time()), self.lease_ms])
        return bool(reply)

    # -- deadlines and index upkeep: the reaper's pass and the listing call these ----------
    def expired_queue_deadlines(self, limit: int = 100) -> list[str]:
        """Ids of jobs whose queue deadline has passed (some may have started meanwhile)."""
        return list(self._due(keys=[keys.queue_deadlines()], args=[0, limit]))

    def expire_queued(self, job_id: str) -> bool:
        """End a never-started job past its queue deadline ``failed`` / ``deadline_exceeded``."""
        error = JobError(code=DEADLINE_EXCEEDED, message="the job did not start before its queue deadline "
                         "(queue_timeout_s); it was not run").model_dump_json()
        return bool(self._expire_queued(keys=[keys.job(job_id), keys.job_events(job_id), keys.queue_deadlines()],
                                        args=[job_id, repr(time.time()), self.record_ttl_s, error]))

    def prune_index(self, limit: int = 1000) -> int:
        """Drop the index entries of records that have expired; returns how many were due."""
        statuses = ",".join(s.value for s in Status)
        return int(self._prune(keys=[keys.index_expiry()], args=[limit, statuses, keys.job("")]))

    def list_jobs(self, tenant: str = keys.DEFAULT_TENANT, status: Status | None = None, limit: int = 20,
                  cursor: Cursor | None = None) -> tuple[list[JobRecord], Cursor | None]:
        """A tenant's jobs newest first (optionally one status), and the cursor of the next page.

        Reads the tenant's sorted sets only, never the keyspace.  ``cursor`` is the last
        (score, id) of the previous page; entries whose record is gone or has moved on to
        another status since are skipped.
        """
        self.prune_index()
        key = keys.jobs_index(tenant, status.value if status else None)
        top: float | str = "+inf" if cursor is None else cursor.score
        ties = 0 if cursor is None else int(self.redis.zcount(key, cursor.score, cursor.score))
        rows: list[tuple[str, float]] = self.redis.zrange(  # type: ignore[assignment]
            key, top, "-inf", desc=True, byscore=True, offset=0, num=limit + ties, withscores=True)
        if cursor is not None:
            rows = [(m, sc) for m, sc in rows if not (int(sc) == cursor.score and m >= cursor.job_id)]
        rows = rows[:limit]
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _ in rows:
            pipe.hgetall(keys.job(job_id))
        records = [_record(raw) for raw in pipe.execute() if raw and raw.get("tenant") == tenant
                   and (status is None or raw["status"] == status.value)]
        more = Cursor(int(rows[-1][1]), rows[-1][0]) if len(rows) == limit else None
        return records, more

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued job or flag a running one; returns the status found (None: unknown)."""
        found = self._cancel(keys=[keys.job(job_id), keys.job_events(job_id)],
                             args=[repr(time.time()), self.record_ttl_s])
        return found or None

    # -- reads ------------------------------------------------------------------------
    def get(self, job_id: str) -> StoredJob | None:
        raw: dict[str, str] = self.redis.hgetall(keys.job(job_id))  # type: ignore[assignment]
        return _stored(raw) if raw else None

    # -- worker side: every write is fenced by the claimed attempt ----------------------
    def claim_job(self, job_id: str, worker: str = "") -> StoredJob | None:
        """``queued -> running`` with a fresh lease, and the claimed job, in one round trip.

        ``worker`` names who runs this attempt (kept in the record for operators); None
        when the job is not claimable.
        """
        now = repr(time.time())
        ok, _, _, raw = self._move(job_id, Status.RUNNING, fence=None, bump=True,
                                   fields={"started_at": now, "worker": worker, "stage": "loading", "loading_at": now})
        if not ok and raw == ["deadline"]:
            self.expire_queued(job_id)
        return _stored(_pairs(raw)) if ok else None

    def renew(self, job_id: str, attempt: int) -> bool:
        """Push the lease of ``attempt`` out by ``lease_s``; False when it no longer owns the job."""
        return bool(self._renew(keys=[keys.job(job_id), keys.leases()], args=[attempt, self.lease_ms]))

    def release(self, job_id: str, attempt: int) -> Requeue | None:
        """The owning attempt gives its job back (``running -> queued``, no attempt cap).

        None when ``attempt`` no longer owns the job.  A ``queued`` result owes a message:
        publish it, then call ``requeue_published``.
        """
        return self._take_back(job_id, str(attempt), "")

    def progress(self, job_id: str, attempt: int, step: int, total: int) -> int:
        """Record progress; -1: this attempt lost the job, 1: cancel requested, 0: go on."""
        payload = json.dumps({"step": step, "total": total})
        return int(self._progress(keys=[keys.job(job_id), keys.job_events(job_id)], args=[attempt, payload]))

    def succeed(self, job_id: str, attempt: int, result: JobResult) -> None:
        self._finish(job_id, attempt, Status.SUCCEEDED, {"result": result.model_dump_json()})

    def fail(self, job_id: str, attempt: int | None, error: JobError) -> None:
        """End ``failed``; ``attempt=None`` fails a job that never started (it could not be run at all)."""
        self._finish(job_id, attempt, Status.FAILED, {"error": error.model_dump_json()})

    def mark_canceled(self, job_id: str, attempt: int) -> None:
        self._finish(job_id, attempt, Status.CANCELED, {})

    def _finish(self, job_id: str, attempt: int | None, target: Status, fields: dict[str, str]) -> None:
        fields = {**fields, "finished_at": repr(time.time())}
        ok, current, owner, _ = self._move(job_id, target, fence=attempt, bump=False, fields=fields,
                                        ttl=self.record_ttl_s)
        if not ok:
            stale = attempt is not None and current == Status.RUNNING.value and owner != str(attempt)
            detail = f"job {job_id}: attempt {attempt} was superseded by attempt {owner}" if stale else ""
            raise TransitionError(job_id, Status(current) if current else None, target, ALLOWED_FROM[target], detail)

    # -- recovery: the reaper's side -----------------------------------------------------
    def expired_leases(self, limit: int = 100) -> list[str]:
        """Ids of running jobs whose lease deadline has passed (oldest first)."""
        return list(self._due(keys=[keys.leases()], args=[0, limit]))

    def reap(self, job_id: str, max_attempts: int) -> Requeue | None:
        """Take back a running job whose lease lapsed; None if it was renewed or finished.

        Atomic, so any number of reapers may race on the same job: one of them gets the
        ``Requeue``.  The attempt count is kept; a job already at ``max_attempts`` ends
        ``failed`` with code ``worker_lost``, one with a cancel pending ends ``canceled``.
        """
        return self._take_back(job_id, "", str(max_attempts))

    def stale_queued(self, older_than_s: float, limit: int = 100) -> list[str]:
        """Ids of jobs ``queued`` (or last swept) at least ``older_than_s`` ago, oldest first."""
        return list(self._due(keys=[keys.queued_jobs()], args=[round(older_than_s * 1000), limit]))

    def touch_queued(self, job_id: str) -> bool:
        """Restart a queued job's clock after its message was published again; False (and the id
        dropped from the set) when it is no longer queued."""
        return bool(self._touch_queued(keys=[keys.job(job_id), keys.queued_jobs()], args=[job_id]))

    def requeue_published(self, job_id: str, stamp: int) -> None:
        """The requeued job's message is out: clear its outbox entry (if still this stamp)."""
        self._published(keys=[keys.requeues()], args=[job_id, stamp])

    def orphaned_requeues(self, silence_s: float, limit: int = 100) -> list[str]:
        """Requeued jobs whose outbox entry is older than ``silence_s``: their publisher died."""
        return list(self._due(keys=[keys.requeues()], args=[round(silence_s * 1000), limit]))

    def adopt_requeue(self, job_id: str, silence_s: float) -> Requeue | None:
        """Take over an orphaned outbox entry; a ``Requeue`` to publish, None if nothing is owed."""
        reply = self._orphan(keys=[keys.job(job_id), keys.requeues()], args=[job_id, round(silence_s * 1000)])
        if not reply:
            return None
        return Requeue(job_id, "queued", reply[1], int(reply[0]), _priority(reply[2]))

    def _take_back(self, job_id: str, owner: str, max_attempts: str) -> Requeue | None:
        error = JobError(code=WORKER_LOST, message=f"the worker running this job was lost on its last "
                         f"allowed attempt ({max_attempts}); the job was not retried again").model_dump_json()
        reply = self._requeue(keys=[keys.job(job_id), keys.job_events(job_id), keys.leases(), keys.requeues()],
                              args=[job_id, owner, max_attempts, self.record_ttl_s, repr(time.time()), error])
        if not reply[0]:
            return None
        return Requeue(job_id, reply[0], reply[1], int(reply[2]), _priority(reply[3]))

    def _move(self, job_id: str, target: Status, *, fence: int | None, bump: bool,
              fields: dict[str, str], ttl: int | None = None) -> tuple[bool, str, str, list[str]]:
        # Unfenced writes (claim, fail-before-start) may only act on a queued job; fenced
        # writes come from a running attempt and may only act on the attempt they own.
        if target is Status.QUEUED:
            raise ValueError("a job is requeued only through reap() or release(), which keep the outbox")
        allowed = ALLOWED_FROM[target] & ({Status.QUEUED} if fence is None else set(Status) - {Status.QUEUED})
        argv: list[Any] = [target.value, ",".join(s.value for s in allowed),
                           "" if fence is None else str(fence), "1" if bump else "0",
                           "" if ttl is None else str(ttl), self.lease_ms]
        argv += [x for pair in fields.items() for x in pair]
        reply = self._transition(keys=[keys.job(job_id), keys.job_events(job_id), keys.leases()], args=argv)
        ok, current, attempt = reply[:3]
        return bool(ok), current, attempt, reply[3] if ok else reply[3:]


class AsyncJobReader:
    """Reads and waits for job records on an asyncio Redis client (the API's event loop).

    Waiting subscribes to the job's channel, then reads the record, so no change can slip
    in between; each event carries the new record, so waking up costs no extra read.
    """

    def __init__(self, client: aioredis.Redis):
        self.redis = client

    async def get(self, job_id: str) -> JobRecord | None:
        raw: dict[str, str] = await self.redis.hgetall(keys.job(job_id))  # type: ignore[assignment]
        return _record(raw) if raw else None

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """The record once terminal, or as it stands after ``timeout_s``; None if unknown."""
        deadline = time.monotonic() + timeout_s
        async with self.redis.pubsub(ignore_subscribe_messages=True) as sub:
            await sub.subscribe(keys.job_events(job_id))
            record = await self.get(job_id)
            while record is not None and record.status not in TERMINAL:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                message = await sub.get_message(ignore_subscribe_messages=True, timeout=left)
                if message is not None:
                    record = parse_event(message["data"])[1]
            return record


def parse_event(data: str) -> tuple[str, JobRecord]:
    """(event name, record) from a message published on a job's channel."""
    doc = json.loads(data)
    return doc["event"], _record(_pairs(doc["record"]))


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _stored(raw: dict[str, str]) -> StoredJob:
    return StoredJob(record=_record(raw), spec=JobSpec.model_validate_json(raw["spec"]),
                     cancel_requested=raw.get("cancel_requested") == "1", worker=raw.get("worker") or None,
                     tenant=raw.get("tenant") or keys.DEFAULT_TENANT, fingerprint=raw.get("fingerprint", ""))


def _record(raw: dict[str, str]) -> JobRecord:
    progress = _json(raw.get("progress"))
    result = _json(raw.get("result"))
    error = _json(raw.get("error"))
    return JobRecord(
        id=raw["id"], tenant=raw.get("tenant") or keys.DEFAULT_TENANT,
        status=Status(raw["status"]), family=raw["family"], pipeline=raw["pipeline"],
        checkpoint=raw["checkpoint"], revision=raw.get("revision") or None, task=Task(raw["task"]),
        progress=Progress(**progress) if progress else None, attempts=int(raw.get("attempt", 0)),
        created_at=datetime.fromtimestamp(float(raw["created_at"]), UTC), started_at=_ts(raw.get("started_at")),
        finished_at=_ts(raw.get("finished_at")),
        result=JobResult(**result) if result else None, error=JobError(**error) if error else None,
        cancel_requested=raw.get("cancel_requested") == "1", stage=Stage(raw["stage"]) if raw.get("stage") else None,
        queued_at=_ts(raw.get("queued_at")), loading_at=_ts(raw.get("loading_at")),
        running_at=_ts(raw.get("running_at")), uploading_at=_ts(raw.get("uploading_at")),
        timeout_s=_float(raw.get("timeout_s")), queue_timeout_s=_float(raw.get("queue_timeout_s")),
        queue_deadline=_ts_ms(raw.get("queue_deadline")),
    )


def record_from_fields(raw: dict[str, str]) -> JobRecord:
    """The public record from a job hash's fields (as HGETALL returns them)."""
    return _record(raw)
