"""A worker's presence in the registry: what it holds, loads and runs, renewed by a heartbeat.

Lives in the pool child, beside the cache it describes.  The record is written at once
whenever the cache changes (a load starts or ends, an eviction), and every ``interval_s``
(``worker_heartbeat_s``, 1 s) by a thread, which also carries the current job and the use
counts (not written per job: that would cost two writes per job); when the process dies or
freezes, the record expires after ``worker_ttl_s`` of silence: the producer stops routing to it
and a reaper requeues the job it held (``lost_workers.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading

import redis

from hotpipe.shared.queues import worker_queue
from hotpipe.shared.registry import HotCheckpoint, Registry, WorkerInfo
from hotpipe.workers.adapters import Adapters
from hotpipe.workers.cache import PipelineCache

log = logging.getLogger(__name__)


class Presence:
    """Publishes ``name``'s record from ``cache`` and the current job."""

    def __init__(self, registry: Registry, name: str, families: list[str], cache: PipelineCache,
                 adapters: Adapters | None = None, interval_s: float | None = None):
        self.registry, self.cache, self.adapters = registry, cache, adapters
        self.interval_s = interval_s if interval_s is not None else registry.ttl_ms / 3000
        self.info = WorkerInfo(name=name, queue=worker_queue(name), families=families, device=cache.device,
                               capacity=cache.max_pipelines, policy=cache.policy_name, host=socket.gethostname(),
                               pid=os.getpid(), max_adapters=adapters.max_resident if adapters else 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="presence", daemon=True)

    def start(self) -> None:
        self.publish()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.registry.retire(self.info.name)
        except redis.RedisError:
            log.warning("could not retire %s from the registry; it expires by itself", self.info.name)

    def set_ready(self) -> None:
        self.info.ready = True
        self.publish()

    def set_job(self, job_id: str | None) -> None:
        """The job this worker runs now (None: none), shown from the next write: a beat, or a cache
        change.  Not written at once: two registry writes per job would be a third of a short job's
        Redis traffic (``benchmarks/redis_cost.py``), for a field only operators read."""
        self.info.current_job = job_id

    def set_batch(self, job_ids: list[str]) -> None:
        """The jobs running now in one call (the first is the current job); [] when the batch ends."""
        self.info.batch = list(job_ids)
        self.info.current_job = job_ids[0] if job_ids else None
        self.publish()

    def publish(self) -> None:
        """Write the record now (best effort: a failed write is retried by the next beat)."""
        if self._stop.is_set():
            return
        with self._lock:
            loras = {k: self.adapters.loras_on(base) for k, base in self.cache.bases()} if self.adapters else {}
            self.info.hot = [HotCheckpoint(k.label, uses, nbytes, k.family, loras.get(k, []))
                             for k, uses, nbytes in self.cache.holds()]
            self.info.loading = [self.cache.loading] if self.cache.loading else []
            victim = self.cache.next_victim()
            self.info.evicts_next = victim.label if victim else None
            self.info.full = self.cache.full()
            self.info.stats = dataclasses.asdict(self.cache.stats())
            if self.adapters is not None:
                self.info.stats["adapters"] = dataclasses.asdict(self.adapters.stats)
            try:
                self.registry.publish(self.info)
            except redis.RedisError as exc:
                log.warning("registry write failed (%s); retrying at the next beat", exc)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.publish()
