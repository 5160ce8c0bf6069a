"""Recovery: taking running jobs back (lapsed leases, give-backs), the requeue outbox, the sweep's set.

A running job holds a lease: its id in one sorted set scored by a deadline on Redis's own clock.
A reaper requeues a job whose lease lapsed (``running -> queued``, attempt count kept) and notes
it in a requeue outbox until its message is published, so a reaper that dies in between loses
nothing; another reaper adopts the orphaned entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import redis

from hotpipe.shared import keys
from hotpipe.shared.job import JobError
from hotpipe.shared.scripts import JobScripts, job_keys
from hotpipe.shared.spec import JobSpec

#: error code of a job whose worker was lost on its last allowed attempt
WORKER_LOST = "worker_lost"


@dataclass(frozen=True)
class Requeue:
    """What taking a running job back did: requeued it (publish a message!) or ended it."""

    job_id: str
    outcome: Literal["queued", "canceled", "failed"]
    family: str
    stamp: int  # the outbox entry's stamp; hand it to ``requeue_published``
    priority: int  # the job's own (from its spec), so the new message queues like the first


@dataclass(frozen=True)
class Holder:
    """Which attempt of a running job holds it, and where it runs (``{node} pid={pool child pid}``)."""

    job_id: str
    worker: str
    attempt: int

    @property
    def node(self) -> str:
        """The worker's node name, its name in the registry."""
        return self.worker.partition(" pid=")[0]


class JobRecovery:
    """The reaper's side of ``JobStore``: lapsed leases, give-backs, the outbox, due sets."""

    redis: redis.Redis
    record_ttl_s: int
    _lua: JobScripts

    def release(self, job_id: str, attempt: int) -> Requeue | None:
        """The owning attempt gives its job back (``running -> queued``, no attempt cap).

        None when ``attempt`` no longer owns the job.  A ``queued`` result owes a message:
        publish it, then call ``requeue_published``.
        """
        return self._take_back(job_id, str(attempt), "")

    def reap(self, job_id: str, max_attempts: int) -> Requeue | None:
        """Take back a running job whose lease lapsed; None if it was renewed or finished.

        Atomic, so any number of reapers may race on the same job: one of them gets the
        ``Requeue``.  The attempt count is kept; a job already at ``max_attempts`` ends
        ``failed`` with code ``worker_lost``, one with a cancel pending ends ``canceled``.
        """
        return self._take_back(job_id, "", str(max_attempts))

    def take_back(self, job_id: str, attempt: int, max_attempts: int) -> Requeue | None:
        """Take back exactly ``attempt``, whose worker is known dead, without waiting for its lease.

        Fenced by attempt (None when the job finished or another attempt holds it now); the cap
        applies as for ``reap``: on the last allowed attempt the job ends ``failed`` / ``worker_lost``.
        """
        return self._take_back(job_id, str(attempt), str(max_attempts))

    def holder(self, job_id: str) -> Holder | None:
        """The attempt holding a running job; None when it is not running."""
        status, worker, attempt = self.redis.hmget(keys.job(job_id), ["status", "worker", "attempt"])
        if status != "running" or not worker or not attempt:
            return None
        return Holder(job_id, str(worker), int(attempt))

    def holders(self) -> list[Holder]:
        """Every running job's holder (the lease set holds exactly the running jobs)."""
        ids = [str(i) for i in self.redis.zrange(keys.leases(), 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), ["worker", "attempt"])
        found = zip(ids, pipe.execute(), strict=True)
        return [Holder(job_id, str(worker), int(attempt)) for job_id, (worker, attempt) in found if worker and attempt]

    def expired_leases(self, limit: int = 100) -> list[str]:
        """Ids of running jobs whose lease deadline has passed (oldest first)."""
        return list(self._lua.due(keys=[keys.leases()], args=[0, limit]))

    def expired_queue_deadlines(self, limit: int = 100) -> list[str]:
        """Ids of jobs whose queue deadline has passed (some may have started meanwhile)."""
        return list(self._lua.due(keys=[keys.queue_deadlines()], args=[0, limit]))

    def stale_queued(self, older_than_s: float, limit: int = 100) -> list[str]:
        """Ids of jobs ``queued`` (or last swept) at least ``older_than_s`` ago, oldest first."""
        return list(self._lua.due(keys=[keys.queued_jobs()], args=[round(older_than_s * 1000), limit]))

    def touch_queued(self, job_id: str) -> bool:
        """Restart a queued job's clock after its message was published again; False (and the id
        dropped from the set) when it is no longer queued."""
        return bool(self._lua.touch_queued(keys=[keys.job(job_id), keys.queued_jobs()], args=[job_id]))

    def requeue_published(self, job_id: str, stamp: int) -> None:
        """The requeued job's message is out: clear its outbox entry (if still this stamp)."""
        self._lua.published(keys=[keys.requeues()], args=[job_id, stamp])

    def orphaned_requeues(self, silence_s: float, limit: int = 100) -> list[str]:
        """Requeued jobs whose outbox entry is older than ``silence_s``: their publisher died."""
        return list(self._lua.due(keys=[keys.requeues()], args=[round(silence_s * 1000), limit]))

    def adopt_requeue(self, job_id: str, silence_s: float) -> Requeue | None:
        """Take over an orphaned outbox entry; a ``Requeue`` to publish, None if nothing is owed."""
        reply = self._lua.orphan(keys=[keys.job(job_id), keys.requeues()], args=[job_id, round(silence_s * 1000)])
        if not reply:
            return None
        return Requeue(job_id, "queued", reply[1], int(reply[0]), _priority(reply[2]))

    def _take_back(self, job_id: str, owner: str, max_attempts: str) -> Requeue | None:
        error = JobError(code=WORKER_LOST, message=f"the worker running this job was lost on its last "
                         f"allowed attempt ({max_attempts}); the job was not retried again").model_dump_json()
        reply = self._lua.requeue(keys=job_keys(job_id, keys.leases(), keys.requeues()),
                                  args=[job_id, owner, max_attempts, self.record_ttl_s, repr(time.time()), error])
        if not reply[0]:
            return None
        return Requeue(job_id, reply[0], reply[1], int(reply[2]), _priority(reply[3]))


def _priority(spec: str) -> int:
    return JobSpec.model_validate_json(spec).priority
