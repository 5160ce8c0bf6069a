"""Prometheus metrics a worker's pool child records about the jobs it runs.

Jobs finished by family and status, failures by error code, stage latency histograms
(queue wait, load, inputs, run, encode, upload), time from claim to the end, whether the
child is busy, the pipeline cache's counters and residency, and GPU memory on CUDA.

In a running worker these live in prometheus_client's multiprocess mode: the child writes
them to files that the parent serves (``exporter.py``); the parent never touches the
device.  Anywhere else (tests, a solo run) they are ordinary in-process metrics on the
registry given.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from hotpipe.shared.job import JobRecord
    from hotpipe.shared.reaper import ReapReport

log = logging.getLogger(__name__)

#: seconds; loads take up to minutes, a hot pipe's lookup microseconds
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                 600.0, 1800.0)
#: images per pipeline call: 1 up to the ``max_batch`` ceiling
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
#: a child's gauges: summed over the live pool children (one per worker), dead children dropped
LIVE: Final[Literal["livesum"]] = "livesum"
#: the cache's cumulative counters, published as Prometheus counters
CACHE_COUNTERS = ("hits", "misses", "evictions", "load_seconds")


P = ParamSpec("P")


def never_raises(method: Callable[P, None]) -> Callable[P, None]:
    """A metric is never worth a job: a failure to record one is logged and forgotten."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            log.warning("could not record %s", method.__name__, exc_info=True)

    return guarded


class CacheStatsView(Protocol):
    """What the pipeline cache reports about itself (``PipelineCache.stats()``), cumulative per process."""

    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    @property
    def load_seconds(self) -> float: ...
    @property
    def resident_pipelines(self) -> int: ...
    @property
    def resident_bytes(self) -> int | None: ...


@dataclass
class WorkerMetrics:
    """The pool child's metrics; ``registry`` None in multiprocess mode (the parent collects the files)."""

    registry: CollectorRegistry | None
    device: str = "cpu"
    #: the pipeline cache's stats, read after every job
    cache_stats: Callable[[], CacheStatsView] | None = None
    _published: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.finished = Counter("hotpipe_worker_jobs_finished", "Jobs this worker ended, by how they ended "
                                "(succeeded, failed, canceled, released, lost, skipped).", ["family", "status"],
                                registry=r)
        self.failures = Counter("hotpipe_worker_job_failures", "Failed jobs by error code.", ["family", "code"],
                                registry=r)
        self.stages = Histogram("hotpipe_job_stage_seconds", "Seconds per stage of a succeeded job: queue_wait "
                                "(submit to first start), load, inputs, run, encode, upload.", ["family", "stage"],
                                buckets=STAGE_BUCKETS, registry=r)
        self.duration = Histogram("hotpipe_job_duration_seconds", "Seconds from claim to the end of the attempt.",
                                  ["family", "status"], buckets=STAGE_BUCKETS, registry=r)
        self.batch_size = Histogram("hotpipe_worker_batch_images", "Images per pipeline call (dynamic batching: "
                                    "compatible jobs share a call, up to HOTPIPE_MAX_BATCH).", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.images = Counter("hotpipe_worker_images", "Images this worker made for jobs that succeeded; its rate "
                              "is the worker's images per second.", registry=r)
        self.busy = Gauge("hotpipe_worker_busy", "1 while the worker runs a job.", registry=r,
                          multiprocess_mode=LIVE)
        self.cache_counters = {name: Counter(f"hotpipe_cache_{name}", f"Pipeline cache {name.replace('_', ' ')}.",
                                             registry=r) for name in CACHE_COUNTERS}
        self.resident_pipelines = Gauge("hotpipe_cache_resident_pipelines", "Checkpoints held hot in the cache.",
                                        registry=r, multiprocess_mode=LIVE)
        self.resident_bytes = Gauge("hotpipe_cache_resident_bytes", "Bytes of the pipelines held hot.",
                                    registry=r, multiprocess_mode=LIVE)
        self.adapters = Counter("hotpipe_adapter_events", "LoRA adapters: hit (resident), load, eviction.", ["event"],
                                registry=r)
        self.gpu_memory = Gauge("hotpipe_gpu_memory_bytes", "GPU memory by torch's allocator after the last job "
                                "(allocated, reserved) and its peak during it (peak).", ["device", "kind"],
                                registry=r, multiprocess_mode=LIVE)
        self.gpu_total = Gauge("hotpipe_gpu_memory_total_bytes", "The GPU's memory.", ["device"], registry=r,
                               multiprocess_mode=LIVE)

    @never_raises
    def job_started(self) -> None:
        self.busy.set(1)
        cuda = _cuda(self.device)
        if cuda is not None:
            cuda.reset_peak_memory_stats(self.device)

    @never_raises
    def adapter_event(self, event: str) -> None:
        """A LoRA adapter was found resident (``hit``), loaded (``load``) or deleted (``eviction``)."""
        self.adapters.labels(event).inc()

    @never_raises
    def call_made(self, images: int) -> None:
        """A pipeline call returned ``images`` images (one job's, or a batch's)."""
        self.batch_size.observe(images)

    @never_raises
    def images_made(self, count: int) -> None:
        """A job succeeded with ``count`` images."""
        self.images.inc(count)

    @never_raises
    def job_failed(self, family: str, code: str) -> None:
        self.failures.labels(family, code).inc()

    @never_raises
    def job_succeeded(self, record: JobRecord, timings: dict[str, float]) -> None:
        """Stage latencies of a succeeded job; queue wait only for a first attempt (retries waited twice)."""
        if record.attempts == 1 and record.started_at is not None:
            wait = (record.started_at - record.created_at).total_seconds()
            self.stages.labels(record.family, "queue_wait").observe(max(wait, 0.0))
        for stage, seconds in timings.items():
            self.stages.labels(record.family, stage).observe(seconds)

    @never_raises
    def job_finished(self, family: str, status: str, seconds: float | None) -> None:
        """The attempt is over (``seconds`` since its claim; None when there was no claim)."""
        self.finished.labels(family, status).inc()
        if seconds is not None:
            self.duration.labels(family, status).observe(seconds)
        self.busy.set(0)
        if self.cache_stats is not None:
            self.publish_cache(self.cache_stats())
        self.publish_gpu()

    def publish_cache(self, stats: CacheStatsView) -> None:
        """The cache's cumulative counts as counters (by difference), its residency as gauges."""
        for name, counter in self.cache_counters.items():
            value = float(getattr(stats, name))
            before = self._published.get(name, 0.0)
            # a smaller value means a new cache: everything it counted is new
            counter.inc(value - before if value >= before else value)
            self._published[name] = value
        self.resident_pipelines.set(stats.resident_pipelines)
        if stats.resident_bytes is not None:
            self.resident_bytes.set(stats.resident_bytes)

    def publish_gpu(self) -> None:
        cuda = _cuda(self.device)
        if cuda is None:
            return
        figures = {"allocated": cuda.memory_allocated(self.device), "reserved": cuda.memory_reserved(self.device),
                   "peak": cuda.max_memory_allocated(self.device)}
        for kind, value in figures.items():
            self.gpu_memory.labels(self.device, kind).set(value)
        self.gpu_total.labels(self.device).set(cuda.get_device_properties(self.device).total_memory)


#: what a reaper pass can do with a job (the lists of ``ReapReport``)
REAP_OUTCOMES = ("queued", "failed", "canceled", "republished", "unpublished")


@dataclass
class ReaperMetrics:
    """The reaper's passes, recorded in the worker's parent (where the reaper runs)."""

    registry: CollectorRegistry | None

    def __post_init__(self) -> None:
        self.jobs = Counter("hotpipe_reaper_jobs", "Jobs a reaper took back from a lost worker, by outcome: "
                            "queued again, failed (last attempt), canceled, republished (outbox), unpublished "
                            "(broker down; retried).", ["outcome"], registry=self.registry)
        self.unavailable = Counter("hotpipe_reaper_redis_unavailable", "Reaper passes skipped: Redis unreachable.",
                                   registry=self.registry)

    @never_raises
    def record(self, report: ReapReport | None) -> None:
        if report is None:
            self.unavailable.inc()
            return
        for outcome in REAP_OUTCOMES:
            if found := len(getattr(report, outcome)):
                self.jobs.labels(outcome).inc(found)


def _cuda(device: str) -> Any:
    """``torch.cuda`` when ``device`` is a CUDA device in use in this process, else None.

    Before the first allocation there is nothing to report, and torch refuses to reset the
    peak of a device it has not initialized ("Invalid device argument", checked on an H100).
    """
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda if torch.cuda.is_available() and torch.cuda.is_initialized() else None
