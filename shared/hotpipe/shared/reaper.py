"""The reaper: takes back running jobs whose worker stopped renewing their lease.

Every worker's parent process runs one (``workers/hotpipe/workers/worker.py``), so wherever there is a
worker there is a reaper, and it survives its own pool child being killed.  Any number
may run at once: taking a job back is one Lua script, so exactly one reaper wins each
job, and only the winner publishes its message.

It does not always wait for leases.  A worker that went silent in the registry for a whole
``worker_ttl_s`` (killed, node lost, frozen) is dead: each pass takes back, fenced by attempt, every
job whose record names that worker (``Holder.node``), seconds after the death instead of a lease
later.  And a Celery parent that saw its pool child die hands that child's attempt back at once
(``take_back_lost``, called from ``workers/hotpipe/workers/recovery.py``).  Both go through the same
fenced script as a lapsed lease: the attempt cap applies (``worker_lost``), and a paused attempt that
wakes up later finds the job no longer its own and stands down.

Requeueing (the record) and publishing (the run message) are two steps, so the requeue also
writes an outbox entry that is cleared once the message is out.  An entry left behind
by a reaper that died in between is adopted by another reaper after ``silence_s`` and
published again.  A job may so get a duplicate message, never none; the duplicate finds
the record no longer ``queued`` and stands down.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from hotpipe.shared.connections import sync_client
from hotpipe.shared.drain import drain_dead
from hotpipe.shared.messages import enqueue
from hotpipe.shared.registry import Registry
from hotpipe.shared.settings import Settings
from hotpipe.shared.store import Holder, JobStore, Requeue
from hotpipe.shared.sweep import sweep_lost_messages

log = logging.getLogger(__name__)

#: publishes the run message of (job id, family, priority): ``partial(messages.enqueue, client)``
Publish = Callable[[str, str, int], None]
#: after Redis was unreachable, heartbeats a reaper lets pass before it believes a worker's silence
SETTLE_BEATS = 3
#: a reaper's Redis calls never block its caller (a worker's event loop) longer than this
SOCKET_TIMEOUT_S = 5.0

_SAYS = {
    "queued": "its worker stopped renewing the lease; requeued",
    "failed": "its worker was lost on the last allowed attempt; failed (worker_lost)",
    "canceled": "its worker was lost with a cancel pending; canceled",
    "republished": "its requeue was never published (reaper died); published again",
    "deadline_exceeded": "it did not start before its queue deadline; failed (deadline_exceeded)",
    "drained": "its worker died with the job in its own queue; moved to the family queue",
    "resent": "queued for long with nothing waiting for its family: its message was lost in flight (a worker "
              "froze holding it); published again",
}


def hand_over(store: JobStore, publish: Publish, requeue: Requeue) -> None:
    """Publish a requeued job's message, then clear its outbox entry."""
    publish(requeue.job_id, requeue.family, requeue.priority)
    store.requeue_published(requeue.job_id, requeue.stamp)


@dataclass
class ReapReport:
    """What one pass did, job ids by outcome."""

    queued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)
    unpublished: list[str] = field(default_factory=list)  # left in the outbox for a later pass
    deadline_exceeded: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)  # moved from a dead worker's own queue
    resent: list[str] = field(default_factory=list)  # queued jobs whose message was lost in flight


@dataclass
class Reaper:
    """Requeues jobs whose lease lapsed and publishes what the outbox still owes."""

    store: JobStore
    publish: Publish
    max_attempts: int
    silence_s: float  # an outbox entry this old has lost its publisher
    batch: int = 100
    #: the worker registry: dead workers' own queues are drained back to the family queues
    registry: Registry | None = None
    #: a job queued this long with nothing waiting for its family gets its message again (0: off)
    stale_queued_s: float = 0.0
    #: silence counts only once this reaper has reached Redis for this long: after an outage every
    #: worker's record has expired until its next heartbeat gets through, alive or not
    settle_s: float = 0.0
    _reachable_since: float | None = field(default=None, init=False, repr=False)

    def run_once(self) -> ReapReport:
        """One pass over expired leases, orphaned outbox entries, queue deadlines, expired index
        entries, dead workers' queues and queued jobs whose message was lost."""
        report = ReapReport()
        if self._reachable_since is None:
            self._reachable_since = time.monotonic()
        self._reap_lapsed(report)
        self._reap_silent(report)
        for job_id in self.store.orphaned_requeues(self.silence_s, self.batch):
            adopted = self.store.adopt_requeue(job_id, self.silence_s)
            if adopted is not None and self._hand_over(adopted, report):
                report.republished.append(job_id)
        self._expire_queued(report)
        self.store.prune_index()
        if self.registry is not None:
            report.drained = drain_dead(self.registry, self.store, self.publish,
                                        forget_after_s=self.registry.ttl_ms / 1000)
        if self.stale_queued_s > 0:
            report.resent = sweep_lost_messages(self.store, self.publish, self.stale_queued_s, self.batch)
        return report

    def _reap_lapsed(self, report: ReapReport) -> None:
        while ids := self.store.expired_leases(self.batch):
            for job_id in ids:
                taken = self.store.reap(job_id, self.max_attempts)
                if taken is not None:
                    getattr(report, taken.outcome).append(job_id)
                    if taken.outcome == "queued":
                        self._hand_over(taken, report)
            if len(ids) < self.batch:
                break

    def _reap_silent(self, report: ReapReport) -> None:
        """Take back the jobs of workers silent in the registry for a whole TTL, without waiting for
        their leases (only workers that registered: one that never did is left to its leases)."""
        settled = self._reachable_since is not None and time.monotonic() - self._reachable_since >= self.settle_s
        if self.registry is None or not settled:
            return
        dead = set(self.registry.dead(0.0, self.batch))
        if not dead:
            return
        for holder in self.store.holders():
            if holder.node in dead:
                self._take(holder, report)

    def take_back_lost(self, job_id: str, worker: str) -> ReapReport:
        """A Celery parent saw its pool child ``worker`` (``{node} pid={pid}``) die running ``job_id``:
        take back the attempt that child held, now.  The report is empty when the record names another
        worker (the child never claimed it, or it finished or was taken back already)."""
        report = ReapReport()
        holder = self.store.holder(job_id)
        if holder is not None and holder.worker == worker:
            self._take(holder, report)
            _log(report)
        return report

    def _take(self, holder: Holder, report: ReapReport) -> None:
        taken = self.store.take_back(holder.job_id, holder.attempt, self.max_attempts)
        if taken is not None:
            getattr(report, taken.outcome).append(holder.job_id)
            if taken.outcome == "queued":
                self._hand_over(taken, report)

    def _expire_queued(self, report: ReapReport) -> None:
        """End queued jobs past their queue deadline, so they end even if no worker ever claims them."""
        for job_id in self.store.expired_queue_deadlines(self.batch):
            if self.store.expire_queued(job_id):
                report.deadline_exceeded.append(job_id)

    def tick(self) -> ReapReport | None:
        """``run_once`` for a timer: logs what it did, and never raises on a Redis outage (None then)."""
        try:
            report = self.run_once()
        except redis.RedisError as exc:
            log.warning("reaper: Redis unavailable (%s); trying again next pass", exc)
            self._reachable_since = None
            return None
        _log(report)
        return report

    def _hand_over(self, requeue: Requeue, report: ReapReport) -> bool:
        try:
            hand_over(self.store, self.publish, requeue)
        except Exception:  # the broker is down: the outbox keeps the debt for a later pass
            log.warning("reaper: could not publish job %s; it stays in the outbox", requeue.job_id,
                        exc_info=True)
            report.unpublished.append(requeue.job_id)
            return False
        return True


def _log(report: ReapReport) -> None:
    for outcome, says in _SAYS.items():
        for job_id in getattr(report, outcome):
            log.warning("reaper: job %s: %s", job_id, says)


def reaper_from_settings(settings: Settings) -> Reaper:
    """A reaper with its own Redis client, which it also publishes messages with."""
    client = sync_client(settings, decode_responses=True, health_check_interval=30,
                                  socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S)
    store = JobStore(client, settings.record_ttl_s, lease_s=settings.lease_s)
    # An outbox entry a whole lease old has outlived the reaper that wrote it.
    return Reaper(store, functools.partial(enqueue, client), settings.max_attempts,
                  silence_s=settings.lease_s, registry=Registry(client, settings.worker_ttl_s),
                  stale_queued_s=settings.stale_queued_s, settle_s=SETTLE_BEATS * settings.worker_heartbeat_s)


def run_reaper(reaper: Reaper, interval_s: float, stop: threading.Event) -> None:
    """Pass after pass, every ``interval_s``, until ``stop`` is set (``hotpipe reaper``)."""
    while not stop.is_set():
        reaper.tick()
        stop.wait(interval_s)
