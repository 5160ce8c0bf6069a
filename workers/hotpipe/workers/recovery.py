"""The Celery parent hands back the job of a pool child that died, at once.

When the pool child is SIGKILLed (the OOM killer, a segfault, a CUDA fault) the parent lives
and is told: Celery's ``AsynPool`` fails the dead child's request with ``WorkerLostError`` the
next time it maintains the pool — on the child's process sentinel when the event loop notices
it, else on its 5 s timer (measured without ``LostChildWatch``: 0.04 to 4.8 s after the kill).
``LostChildWatch`` maintains the pool every ``WATCH_INTERVAL_S`` on the parent's event-loop
timer, so it is noticed within that.  Celery then rejects the message back to the broker — but
the record still says ``running``, so that redelivery stands down at the claim, and without this
module the job would wait for its lease.

``lost_child_request`` is the task's ``Request`` class: on ``WorkerLostError`` it asks the
reaper to take back exactly the attempt the dead child held — the record's ``worker`` must be
``{node} pid={that child's pid}`` (``attempt_worker``), and the take-back is fenced by the
attempt read with it, the attempt cap applying (``worker_lost`` on the last one).  The requeue
publishes a fresh message through the outbox; Celery's own redelivery is a duplicate that
stands down.  A child that ran a batch (``max_batch`` > 1) held more attempts than its request's:
the jobs it took from their queues have no Celery request, so the parent also takes back every
other running job whose ``worker`` is that child (one read of the lease set's holders).
The Redis calls run on the parent's event loop, bounded by the reaper's socket
timeouts; if they fail, the reaper's silent-worker pass or the lease still recovers the job.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import bootsteps
from celery.worker.request import Request
from kombu.asynchronous.timer import Entry

from hotpipe.shared.reaper import Reaper, ReapReport, reaper_from_settings
from hotpipe.shared.settings import Settings

log = logging.getLogger(__name__)

#: how often the parent maintains its pool (which is when Celery notices a dead child's job)
WATCH_INTERVAL_S = 0.25


def attempt_worker(node: str, pid: int | None) -> str:
    """What a job's record says runs its attempt: the worker's node name and the pool child's pid."""
    return f"{node} pid={pid}"


def lost_child_request(settings: Settings, parent_side: dict[str, Any]) -> type[Request]:
    """The task's Request class: a request whose pool child died hands its attempt back at once.

    ``parent_side`` holds the parent's ``reaper`` and its ``metrics`` once the reaper bootstep has
    started (the hand-back counts in ``hotpipe_reaper_jobs`` like any take-back); without them (a
    bare app) a reaper is made on first use, in the parent."""

    batching = settings.batch_limit() > 1

    def take_back(job_id: str, worker: str) -> None:
        if "reaper" not in parent_side:
            parent_side["reaper"] = reaper_from_settings(settings)
        try:
            report = take_back_child(parent_side["reaper"], job_id, worker, batching)
        except Exception:  # Redis away: the reaper's silent-worker pass or the lease still recovers it
            log.warning("job %s: could not hand back the attempts of dead pool child %s", job_id, worker,
                        exc_info=True)
            return
        if parent_side.get("metrics") is not None:
            parent_side["metrics"].record(report)
        outcomes = [name for name in ("queued", "failed", "canceled") if getattr(report, name)]
        if outcomes:
            log.warning("job %s: pool child %s died; its attempt was taken back (%s)", job_id, worker, outcomes[0])
        else:
            log.info("job %s: pool child %s died; the job was no longer its own", job_id, worker)

    class LostChildRequest(Request):
        def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
            super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
            exc = exc_info.exception
            if isinstance(exc, ExceptionWithTraceback):
                exc = exc.exc
            if isinstance(exc, WorkerLostError) and self.args and self.worker_pid:
                take_back(str(self.args[0]), attempt_worker(self.hostname, self.worker_pid))

    return LostChildRequest


def take_back_child(reaper: Reaper, job_id: str, worker: str, batching: bool) -> ReapReport:
    """Take back what dead pool child ``worker`` held: ``job_id`` (its request's), and with ``batching``
    every other running job whose record names that child (the batch it took from the queues)."""
    report = reaper.take_back_lost(job_id, worker)
    if not batching:
        return report
    for holder in reaper.store.holders():
        if holder.worker == worker and holder.job_id != job_id:
            more = reaper.take_back_lost(holder.job_id, worker)
            for name in (f.name for f in dataclasses.fields(ReapReport)):
                getattr(report, name).extend(getattr(more, name))
    return report


class LostChildWatch(bootsteps.StartStopStep):
    """Parent: maintain the pool every ``WATCH_INTERVAL_S`` (reaps a dead child, fails its request,
    starts a new child), rather than only on the sentinel or billiard's 5 s timer."""

    requires = ("celery.worker.components:Timer", "celery.worker.components:Pool")

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.entry: Entry | None = None

    def start(self, parent: Any) -> None:
        def maintain() -> None:
            maintain_pool = getattr(getattr(parent, "pool", None), "maintain_pool", None)
            if maintain_pool is not None:
                maintain_pool()
        self.entry = parent.timer.call_repeatedly(WATCH_INTERVAL_S, maintain, priority=5)

    def stop(self, parent: Any) -> None:
        if self.entry is not None:
            self.entry.cancel()
