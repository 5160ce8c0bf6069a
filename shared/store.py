"""The job status store: one Redis hash per job, changed only by guarded transitions.

Every transition is one Lua script, so check-and-set is atomic on the server: the
current status must be one the target may be entered from, and writes made by a
worker carry the attempt number they claimed — a fencing token — so an attempt that
was superseded can never overwrite the newer attempt's record.  Each change is
published on the job's channel with the whole record, which is what waiters listen to:
a waiter wakes up holding the new record, without reading it back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis

from hotpipe.shared import keys
from hotpipe.shared.job import JobError, JobRecord, JobResult, Progress, Task
from hotpipe.shared.status import ALLOWED_FROM, TERMINAL, Status, TransitionError

# Publish an event with the record as it now stands (HGETALL's flat list).
_ANNOUNCE = """
local function announce(event)
  redis.call('PUBLISH', KEYS[2], cjson.encode({event = event, record = redis.call('HGETALL', KEYS[1])}))
end
"""

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# ARGV: target, allowed-from (comma list), fence attempt ('' = none), bump attempt ('1'/'0'),
#       ttl seconds ('' = none), then field/value pairs.  Returns {ok, status, attempt, record}.
_TRANSITION = _ANNOUNCE + """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return {0, '', '0'} end
local attempt = redis.call('HGET', KEYS[1], 'attempt') or '0'
local ok = false
for s in string.gmatch(ARGV[2], '[^,]+') do if s == cur then ok = true end end
if not ok or (ARGV[3] ~= '' and ARGV[3] ~= attempt) then return {0, cur, attempt} end
if ARGV[4] == '1' then attempt = tostring(tonumber(attempt) + 1) end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'attempt', attempt)
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
if ARGV[5] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
announce(ARGV[1])
return {1, ARGV[1], attempt, redis.call('HGETALL', KEYS[1])}
"""

# ARGV: fence attempt, progress JSON.  Returns -1 when the attempt no longer owns the
# job (stop working), else 1 when a cancel was requested, 0 otherwise.
_PROGRESS = _ANNOUNCE + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return -1 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
announce('progress')
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 1 end
return 0
"""

# A queued job is canceled at once; a running one is asked to stop at its next step.
_CANCEL = _ANNOUNCE + """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return '' end
if cur == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  announce('canceled')
  return 'canceled'
end
if cur == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  announce('cancel_requested')
end
return cur
"""


@dataclass(frozen=True)
class StoredJob:
    """A job as the worker needs it: the public record plus the private run spec."""

    record: JobRecord
    spec: dict[str, Any]
    cancel_requested: bool


def _ts(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _json(value: str | None) -> Any:
    return json.loads(value) if value else None


class JobStore:
    """Reads and guarded writes of job records; the only code that touches job hashes."""

    def __init__(self, client: redis.Redis, record_ttl_s: int):
        self.redis = client
        self.record_ttl_s = record_ttl_s
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._progress = client.register_script(_PROGRESS)
        self._cancel = client.register_script(_CANCEL)

    # -- producer side ----------------------------------------------------------------
    def create(self, job_id: str, *, family: str, pipeline: str, checkpoint: str, revision: str | None,
               task: Task, spec: dict[str, Any]) -> JobRecord:
        """Write a new ``queued`` record and return it; refuses to overwrite an existing job."""
        fields = {
            "id": job_id, "status": Status.QUEUED.value, "attempt": "0", "family": family,
            "pipeline": pipeline, "checkpoint": checkpoint, "revision": revision or "",
            "task": task.value, "created_at": repr(time.time()), "spec": json.dumps(spec),
        }
        argv = [x for pair in fields.items() for x in pair]
        if not self._create(keys=[keys.job(job_id)], args=argv):
            raise TransitionError(job_id, None, Status.QUEUED, frozenset(), detail=f"job {job_id} already exists")
        return _record(fields)

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
    def claim(self, job_id: str) -> int | None:
        """``queued -> running``; returns the new attempt number, None if not claimable."""
        job = self.claim_job(job_id)
        return job.record.attempts if job else None

    def claim_job(self, job_id: str) -> StoredJob | None:
        """``queued -> running`` and the claimed job, in one round trip; None if not claimable."""
        ok, _, _, raw = self._move(job_id, Status.RUNNING, fence=None, bump=True,
                                   fields={"started_at": repr(time.time())})
        return _stored(_pairs(raw)) if ok else None

    def progress(self, job_id: str, attempt: int, step: int, total: int) -> int:
        """Record progress; -1: this attempt lost the job, 1: cancel requested, 0: go on."""
        payload = json.dumps({"step": step, "total": total})
        return int(self._progress(keys=[keys.job(job_id), keys.job_events(job_id)], args=[attempt, payload]))

    def succeed(self, job_id: str, attempt: int, result: JobResult) -> None:
        self._finish(job_id, attempt, Status.SUCCEEDED, {"result": result.model_dump_json()})

    def fail(self, job_id: str, attempt: int | None, error: JobError) -> None:
        """End ``failed``; ``attempt=None`` fails a job that never started (enqueue error)."""
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

    def _move(self, job_id: str, target: Status, *, fence: int | None, bump: bool,
              fields: dict[str, str], ttl: int | None = None) -> tuple[bool, str, str, list[str]]:
        # Unfenced writes (claim, fail-before-start) may only act on a queued job; fenced
        # writes come from a running attempt and may only act on the attempt they own.
        allowed = ALLOWED_FROM[target] & ({Status.QUEUED} if fence is None else set(Status) - {Status.QUEUED})
        argv: list[Any] = [target.value, ",".join(s.value for s in allowed),
                           "" if fence is None else str(fence), "1" if bump else "0",
                           "" if ttl is None else str(ttl)]
        argv += [x for pair in fields.items() for x in pair]
        reply = self._transition(keys=[keys.job(job_id), keys.job_events(job_id)], args=argv)
        ok, current, attempt = reply[:3]
        return bool(ok), current, attempt, reply[3] if ok else []


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
    return StoredJob(record=_record(raw), spec=_json(raw.get("spec")) or {},
                     cancel_requested=raw.get("cancel_requested") == "1")


def _record(raw: dict[str, str]) -> JobRecord:
    progress = _json(raw.get("progress"))
    result = _json(raw.get("result"))
    error = _json(raw.get("error"))
    return JobRecord(
        id=raw["id"], status=Status(raw["status"]), family=raw["family"], pipeline=raw["pipeline"],
        checkpoint=raw["checkpoint"], revision=raw.get("revision") or None, task=Task(raw["task"]),
        progress=Progress(**progress) if progress else None, attempts=int(raw.get("attempt", 0)),
        created_at=datetime.fromtimestamp(float(raw["created_at"]), UTC), started_at=_ts(raw.get("started_at")),
        finished_at=_ts(raw.get("finished_at")),
        result=JobResult(**result) if result else None, error=JobError(**error) if error else None,
        cancel_requested=raw.get("cancel_requested") == "1",
    )
