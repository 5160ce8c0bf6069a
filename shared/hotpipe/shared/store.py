"""The job status store: one Redis hash per job, changed only by guarded transitions.

Every transition is one Lua script (``lua/``, loaded by ``scripts.py``), so check-and-set is
atomic on the server: the move must be one ``status.ALLOWED_FROM`` allows (the one transition
table, compiled into every script's prelude), and writes made by a worker carry the attempt
number they claimed — a fencing token — so an attempt that was superseded can never overwrite
the newer attempt's record.  Each change is published on the job's channel with the whole
record, which is what waiters listen to: a waiter wakes up holding the new record, without
reading it back.

A running job holds a lease: its id in one sorted set scored by a deadline on Redis's own
clock (so no host's clock matters).  Claiming sets it, the owning attempt's heartbeat renews
it, every other status drops it.  A reaper requeues a job whose lease lapsed (``running ->
queued``, attempt count kept) and notes it in a requeue outbox until its message is
published, so a reaper that dies in between loses nothing.

``JobStore`` is put together from one class per concern, each in its own module:
``job_creation`` (creates, idempotency), ``job_transitions`` (claim, progress, stages, ends,
cancel, queue deadlines), ``job_recovery`` (reaps, give-backs, the requeue outbox),
``job_listing`` (tenant listings); ``job_records`` turns hashes into records and
``job_reader`` waits for them on the API's event loop.  Every name callers import from here
still is.
"""

from __future__ import annotations

import redis

from hotpipe.shared import keys
from hotpipe.shared.job_creation import JobCreation, JobExists, JobOptions, KeyTaken
from hotpipe.shared.job_listing import JobListing
from hotpipe.shared.job_reader import AsyncJobReader
from hotpipe.shared.job_records import Cursor, StoredJob, parse_event, record_from_fields, stored_job
from hotpipe.shared.job_recovery import WORKER_LOST, Holder, JobRecovery, Requeue
from hotpipe.shared.job_transitions import CANCEL_REQUESTED, DEADLINE_EXCEEDED, JobTransitions
from hotpipe.shared.scripts import JobScripts

__all__ = ["CANCEL_REQUESTED", "DEADLINE_EXCEEDED", "WORKER_LOST", "AsyncJobReader", "Cursor", "Holder", "JobExists",
           "JobOptions", "JobStore", "KeyTaken", "Requeue", "StoredJob", "parse_event", "record_from_fields"]


class JobStore(JobCreation, JobTransitions, JobRecovery, JobListing):
    """Reads and guarded writes of job records; the only code that touches job hashes."""

    def __init__(self, client: redis.Redis, record_ttl_s: int, lease_s: float = 30.0):
        self.redis = client
        self.record_ttl_s = record_ttl_s
        self.lease_ms = round(lease_s * 1000)
        self._lua = JobScripts(client)

    def get(self, job_id: str) -> StoredJob | None:
        """The job as the worker sees it (record, spec, cancel flag), None if unknown."""
        raw: dict[str, str] = self.redis.hgetall(keys.job(job_id))  # type: ignore[assignment]
        return stored_job(raw) if raw else None
