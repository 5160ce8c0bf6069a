"""Finding run messages lost in flight: a job queued for long while nothing waits for its family.

A worker's consumer takes a message off its Redis list with ``BRPOP``; Kombu files it as
unacked (where a visibility timeout would bring it back) only once it has read the reply.
A worker frozen while blocked in ``BRPOP`` (``SIGSTOP``, a paused VM, a hung host) has the
next message popped into a socket it never reads; killed after that, the message is gone,
and the job's record stays ``queued`` with no lease and no outbox entry to bring it back.

Messages carry no job-specific key to look up, so the sweep works from the records: a job
that has been ``queued`` for ``stale_queued_s`` (``keys.queued_jobs``, kept by the store's
scripts) while every list that could hold its message is empty — its family's queue and
the own queues of the family's live workers — has lost its message, and gets a new one at
its priority (its clock restarts, so it is re-sent at most once a period).  A queued job
behind a backlog is never touched: its list isn't empty.  If the first message was not lost
after all (the worker was only paused), the second delivery finds the record claimed and
stands down, as every duplicate does.
"""

from __future__ import annotations

import logging

from hotpipe.shared.drain import Publish
from hotpipe.shared.queues import waiting
from hotpipe.shared.status import Status
from hotpipe.shared.store import JobStore

log = logging.getLogger(__name__)


def sweep_lost_messages(store: JobStore, publish: Publish, stale_s: float, limit: int = 100) -> list[str]:
    """Publish again the messages of jobs ``queued`` for ``stale_s`` whose family has nothing
    waiting anywhere; the job ids re-sent."""
    resent: list[str] = []
    empty: dict[str, bool] = {}  # family -> nothing waiting for it (read once per pass)
    for job_id in store.stale_queued(stale_s, limit):
        job = store.get(job_id)
        if job is None or job.record.status is not Status.QUEUED:
            store.touch_queued(job_id)  # drops it from the set
            continue
        family = job.record.family
        if family not in empty:
            empty[family] = waiting(store.redis, family) == 0
        if not empty[family]:
            continue
        publish(job_id, family, job.spec.priority)
        store.touch_queued(job_id)
        resent.append(job_id)
    return resent
