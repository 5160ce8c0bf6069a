"""The heartbeat: a thread that keeps a running job's lease while its attempt works.

It runs beside the job from claim to the terminal write, model loading included (the
step callback can't speak while ``from_pretrained`` runs).  It lives in the same
process as the job, so when that process dies, hangs with the GIL held, or is frozen,
the renewals stop and the reaper takes the job back.  (A hang in native code that
released the GIL keeps the heartbeat going: the time limit is the cure for that one.)

It also enforces the job's time limit, because it is the thread that still runs when the
job's own thread is stuck: past the limit it ends the job ``failed`` (``time_limit``,
fenced by attempt) and calls ``on_limit`` — in a worker, the pool child kills itself and
Celery starts a fresh one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

import redis

from hotpipe.shared.job import JobError
from hotpipe.shared.status import TransitionError
from hotpipe.shared.store import JobStore

#: error code of a job that ran past the time limit
TIME_LIMIT = "time_limit"

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews ``attempt``'s lease every ``interval_s`` until stopped or the job is lost.

    ``lost`` is set once a renewal finds that the attempt no longer owns the job.
    A renewal that can't reach Redis is retried at the next beat; if none gets through
    for a whole lease, the reaper may take the job back and this attempt's writes are
    refused from then on (fencing).
    """

    def __init__(self, store: JobStore, job_id: str, attempt: int, interval_s: float, time_limit_s: float = 0.0,
                 on_limit: Callable[[], None] | None = None):
        self.store, self.job_id, self.attempt, self.interval_s = store, job_id, attempt, interval_s
        self.time_limit_s, self.on_limit = time_limit_s, on_limit
        self.deadline = time.monotonic() + time_limit_s if time_limit_s > 0 else None
        self.lost = threading.Event()
        self.timed_out = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _pause(self) -> float:
        if self.deadline is None:
            return self.interval_s
        return max(0.0, min(self.interval_s, self.deadline - time.monotonic()))

    def _beat(self) -> None:
        while not self._stop.wait(self._pause()):
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self._time_limit()
                return
            try:
                owned = self.store.renew(self.job_id, self.attempt)
            except redis.RedisError as exc:
                log.warning("job %s: lease renewal failed (%s); retrying", self.job_id, exc)
                continue
            if not owned:
                log.warning("job %s: attempt %s no longer owns the job", self.job_id, self.attempt)
                self.lost.set()
                return

    def _time_limit(self) -> None:
        error = JobError(code=TIME_LIMIT, message=f"the job ran past this server's time limit of "
                         f"{self.time_limit_s:g} s (HOTPIPE_JOB_TIME_LIMIT_S) and was stopped")
        for delay in (0.5, 1.0, 2.0, 4.0, None):
            try:
                self.store.fail(self.job_id, self.attempt, error)
                break
            except TransitionError:  # it finished, or was taken back, just now: nothing to stop
                self.lost.set()
                return
            except redis.RedisError as exc:
                if delay is None:
                    log.error("job %s: could not record the time limit (%s); the lease will lapse", self.job_id, exc)
                    break
                time.sleep(delay)
        log.error("job %s: attempt %s ran past the time limit (%g s); stopped", self.job_id, self.attempt,
                  self.time_limit_s)
        self.timed_out.set()
        self.lost.set()
        if self.on_limit is not None:
            self.on_limit()
