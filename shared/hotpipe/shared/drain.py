"""Draining a dead worker's own queue back to the family queues: no job is stranded there.

Jobs are routed to a worker's own queue because it holds their checkpoint; if that worker
dies (its registry record expires) they would wait there forever.  Every reaper pass
republishes each message it finds there on the job's family queue at the job's priority,
then removes it.  Publishing before removing means a crash in between duplicates a
message, never loses one; the duplicate finds the record no longer ``queued`` and stands down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hotpipe.shared.queues import priority_lists, worker_queue
from hotpipe.shared.registry import Registry, message_job_id
from hotpipe.shared.status import Status
from hotpipe.shared.store import JobStore

log = logging.getLogger(__name__)

#: (job id, family, priority) -> publish on the family queue
Publish = Callable[[str, str, int], None]


def drain_worker(registry: Registry, store: JobStore, publish: Publish, name: str) -> list[str]:
    """Move every message of ``name``'s own queue to its job's family queue; the job ids moved."""
    moved: list[str] = []
    for lst in priority_lists(worker_queue(name)):
        while (found := registry.redis.lindex(lst, -1)) is not None:  # oldest first: Kombu pops the right end
            raw = str(found)
            job_id = message_job_id(raw)
            job = store.get(job_id) if job_id else None
            if job is not None and job.record.status is Status.QUEUED:
                publish(job.record.id, job.record.family, job.spec.priority)
                moved.append(job.record.id)
            registry.redis.lrem(lst, -1, raw)
    return moved


def drain_dead(registry: Registry, store: JobStore, publish: Publish, forget_after_s: float) -> list[str]:
    """Drain every dead worker's queue; forget those dead longer than ``forget_after_s`` (a producer
    that read their record just before it expired has published by then)."""
    moved: list[str] = []
    forget = set(registry.dead(forget_after_s))
    for name in registry.dead(0):
        jobs = drain_worker(registry, store, publish, name)
        if jobs:
            log.warning("worker %s is gone; moved %d queued job(s) to the family queue", name, len(jobs))
        moved += jobs
        if name in forget:
            registry.forget(name)
    return moved
