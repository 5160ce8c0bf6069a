"""Guarded transitions of one job: claim, progress and stages, the worker's ends, cancel, deadlines.

Each is one Lua script (``lua/``), so check-and-set is atomic on the server: the move must be in
``status.ALLOWED_FROM`` (the prelude's ``move`` enforces the table), and writes made by a worker
carry the attempt number they claimed — a fencing token — so an attempt that was superseded can
never overwrite the newer attempt's record.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hotpipe.shared import keys
from hotpipe.shared.job import JobError, JobResult
from hotpipe.shared.job_records import StoredJob, pairs, stored_job
from hotpipe.shared.scripts import JobScripts, job_keys
from hotpipe.shared.status import ALLOWED_FROM, Status, TransitionError

#: error code of a job that did not start before its queue deadline
DEADLINE_EXCEEDED = "deadline_exceeded"
#: ``set_stage``'s answer when it carried progress and a cancel was requested
CANCEL_REQUESTED = 2


class JobTransitions:
    """The worker's side of ``JobStore`` (every write fenced by the claimed attempt), and cancels."""

    record_ttl_s: int
    lease_ms: int
    _lua: JobScripts

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
        return stored_job(pairs(raw)) if ok else None

    def renew(self, job_id: str, attempt: int) -> bool:
        """Push the lease of ``attempt`` out by ``lease_s``; False when it no longer owns the job."""
        return bool(self._lua.renew(keys=[keys.job(job_id), keys.leases()], args=[attempt, self.lease_ms]))

    def progress(self, job_id: str, attempt: int, step: int, total: int) -> int:
        """Record progress; -1: this attempt lost the job, 1: cancel requested, 0: go on."""
        payload = json.dumps({"step": step, "total": total})
        return int(self._lua.progress(keys=job_keys(job_id), args=[attempt, payload]))

    def set_stage(self, job_id: str, attempt: int, stage: str, progress: tuple[int, int] | None = None) -> int:
        """The owning attempt enters ``stage`` (``running``, ``uploading``) and renews its lease
        (as ``renew`` does), recording ``progress`` (step, total) too when given; 0 (falsy) if it no
        longer owns the job, else 1 — or ``CANCEL_REQUESTED`` when it carried progress and a cancel
        was requested (what ``progress`` would have answered)."""
        payload = json.dumps({"step": progress[0], "total": progress[1]}) if progress else ""
        return int(self._lua.stage(keys=job_keys(job_id, keys.leases()),
                                   args=[attempt, stage, repr(time.time()), self.lease_ms, payload]))

    def succeed(self, job_id: str, attempt: int, result: JobResult) -> None:
        """The owning attempt ends its job ``succeeded`` with ``result``."""
        self._finish(job_id, attempt, Status.SUCCEEDED, {"result": result.model_dump_json()})

    def fail(self, job_id: str, attempt: int | None, error: JobError) -> None:
        """End ``failed``; ``attempt=None`` fails a job that never started (it could not be run at all)."""
        self._finish(job_id, attempt, Status.FAILED, {"error": error.model_dump_json()})

    def mark_canceled(self, job_id: str, attempt: int) -> None:
        """The owning attempt stopped on a cancel request: its job ends ``canceled``."""
        self._finish(job_id, attempt, Status.CANCELED, {})

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued job or flag a running one; returns the status found (None: unknown)."""
        found = self._lua.cancel(keys=job_keys(job_id), args=[repr(time.time()), self.record_ttl_s])
        return found or None

    def expire_queued(self, job_id: str) -> bool:
        """End a never-started job past its queue deadline ``failed`` / ``deadline_exceeded``."""
        error = JobError(code=DEADLINE_EXCEEDED, message="the job did not start before its queue deadline "
                         "(queue_timeout_s); it was not run").model_dump_json()
        return bool(self._lua.expire_queued(keys=job_keys(job_id, keys.queue_deadlines()),
                                            args=[job_id, repr(time.time()), self.record_ttl_s, error]))

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
        # The script allows only status.ALLOWED_FROM's moves; unfenced writes (claim, fail-before-start)
        # may only act on a queued job, fenced ones come from a running attempt and act only on the
        # attempt they own.  Requeues keep an outbox, so they go through reap() / release() alone.
        if target is Status.QUEUED:
            raise ValueError("a job is requeued only through reap() or release(), which keep the outbox")
        argv: list[Any] = [target.value, "" if fence is None else str(fence), "1" if bump else "0",
                           "" if ttl is None else str(ttl), self.lease_ms]
        argv += [x for pair in fields.items() for x in pair]
        reply = self._lua.transition(keys=job_keys(job_id, keys.leases()), args=argv)
        ok, current, attempt = reply[:3]
        return bool(ok), current, attempt, reply[3] if ok else reply[3:]
