"""The Celery parent hands back the job of a pool child that died, at once.

When the pool child is SIGKILLed (the OOM killer, a segfault, a CUDA fault) the parent lives
and is told: Celery's ``AsynPool`` watches each child's process sentinel and, when it becomes
readable, fails the child's request with ``WorkerLostError`` right away (milliseconds).  Celery
then rejects the message back to the broker — but the record still says ``running``, so that
redelivery stands down at the claim, and without this module the job would wait for its lease.

``lost_child_request`` is the task's ``Request`` class: on ``WorkerLostError`` it asks the
reaper to take back exactly the attempt the dead child held — the record's ``worker`` must be
``{node} pid={that child's pid}`` (``attempt_worker``), and the take-back is fenced by the
attempt read with it, the attempt cap applying (``worker_lost`` on the last one).  The requeue
publishes a fresh message through the outbox; Celery's own redelivery is a duplicate that
stands down.  The Redis calls run on the parent's event loop, bounded by the reaper's socket
timeouts; if they fail, the reaper's silent-worker pass or the lease still recovers the job.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.worker.request import Request

from hotpipe.shared.reaper import Reaper, reaper_from_settings
from hotpipe.shared.settings import Settings

log = logging.getLogger(__name__)


def attempt_worker(node: str, pid: int | None) -> str:
    """What a job's record says runs its attempt: the worker's node name and the pool child's pid."""
    return f"{node} pid={pid}"


def lost_child_request(settings: Settings) -> type[Request]:
    """The task's Request class: a request whose pool child died hands its attempt back at once."""
    reapers: list[Reaper] = []  # made on first use, in the parent (never inherited by a child)

    def take_back(job_id: str, worker: str) -> None:
        if not reapers:
            reapers.append(reaper_from_settings(settings))
        try:
            taken = reapers[0].take_back_lost(job_id, worker)
        except Exception:  # Redis away: the reaper's silent-worker pass or the lease still recovers it
            log.warning("job %s: could not hand back the attempt of dead pool child %s", job_id, worker,
                        exc_info=True)
            return
        if taken is None:
            log.info("job %s: pool child %s died; the job was no longer its own", job_id, worker)
        else:
            log.warning("job %s: pool child %s died; its attempt was taken back (%s)", job_id, worker, taken.outcome)

    class LostChildRequest(Request):
        def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
            super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
            exc = exc_info.exception
            if isinstance(exc, ExceptionWithTraceback):
                exc = exc.exc
            if isinstance(exc, WorkerLostError) and self.args and self.worker_pid:
                take_back(str(self.args[0]), attempt_worker(self.hostname, self.worker_pid))

    return LostChildRequest
