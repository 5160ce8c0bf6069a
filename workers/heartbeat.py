"""The heartbeat: a thread that keeps a running job's lease while its attempt works.

It runs beside the job from claim to the terminal write, model loading included (the
step callback can't speak while ``from_pretrained`` runs).  It lives in the same
process as the job, so when that process dies, hangs with the GIL held, or is frozen,
the renewals stop and the reaper takes the job back.  (A hang in native code that
released the GIL keeps the heartbeat going; a time limit is the cure for that one.)
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis

from hotpipe.shared.store import JobStore

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews ``attempt``'s lease every ``interval_s`` until stopped or the job is lost.

    ``lost`` is set once a renewal finds that the attempt no longer owns the job.
    A renewal that can't reach Redis is retried at the next beat; if none gets through
    for a whole lease, the reaper may take the job back and this attempt's writes are
    refused from then on (fencing).
    """

    def __init__(self, store: JobStore, job_id: str, attempt: int, interval_s: float):
        self.store, self.job_id, self.attempt, self.interval_s = store, job_id, attempt, interval_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                owned = self.store.renew(self.job_id, self.attempt)
            except redis.RedisError as exc:
                log.warning("job %s: lease renewal failed (%s); retrying", self.job_id, exc)
                continue
            if not owned:
                log.warning("job %s: attempt %s no longer owns the job", self.job_id, self.attempt)
                self.lost.set()
                return
