"""``hotpipe worker``: a Celery worker pinned to model families and one device.

The pool is prefork with one child: the parent only consumes messages and never
touches the device; the child builds its runtime in ``worker_process_init`` (cheap:
connections only) and loads pipelines lazily on the first job, so slow loads can't
trip Celery's child start-up timeout.

Recovery lives in two places.  The child heartbeats the lease of the job it runs
(``heartbeat.py``).  The parent runs the reaper on its event-loop timer (a bootstep,
no thread in a process that forks), so a worker whose child was killed still reaps, and
so does every other worker: reaping is atomic per job.  On SIGTERM the parent starts
Celery's warm shutdown and tells the child to drain: the running job gets
``shutdown_grace_s`` to finish, then is given back to the queue.  If the process is
killed before that, the lease lapses and some reaper requeues the job.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from pathlib import Path
from typing import Any

import billiard.process
import redis
import torch
from celery import Celery, bootsteps, signals
from kombu.asynchronous.timer import Entry

from hotpipe.shared.celery_app import TASK_NAME, enqueue, make_celery, queue_name
from hotpipe.shared.reaper import Reaper
from hotpipe.shared.safety import parse_patterns
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.exporter import MetricsExporter
from hotpipe.workers.job_runner import JobRunner
from hotpipe.workers.metrics import ReaperMetrics, WorkerMetrics, legacy_cache_stats

log = logging.getLogger(__name__)

#: what the parent sends its pool child when a shutdown starts: drain the running job.
#: (SIGTERM itself is reset to "die" in pool children, and billiard uses SIGUSR1.)
DRAIN_SIGNAL = signal.SIGUSR2
#: the reaper's Redis calls run on the parent's event loop: never block it for long
REAPER_SOCKET_TIMEOUT_S = 5.0

#: how much later than the job time limit Celery's own hard limit kills a pool child
CELERY_BACKSTOP_S = 60.0

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_dtype(setting: str, device: str) -> torch.dtype:
    """``auto`` is fp16 on CUDA and fp32 on CPU; otherwise the named dtype."""
    if setting == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return DTYPES[setting]


def celery_time_limit(settings: Settings) -> float | None:
    """Celery's hard limit, a backstop behind the heartbeat's: it frees a child hung with the GIL
    held (whose heartbeat stopped, so the reaper has already requeued its job)."""
    if not settings.job_time_limit_s:
        return None
    return settings.job_time_limit_s + 2 * settings.lease_s + CELERY_BACKSTOP_S


def replace_child() -> None:
    """The pool child ran a job past its time limit and may be hung in native code: end it.

    SIGKILL, because nothing in a hung process can be trusted to unwind; Celery's parent
    starts a fresh child, and the job's message, rejected with the lost worker, comes back
    to find the job already failed, and stands down.
    """
    os.kill(os.getpid(), signal.SIGKILL)


def build_runner(settings: Settings) -> JobRunner:
    """The per-process runtime: Redis, S3, an empty pipeline cache on the settings' device, and job
    metrics (registered nowhere: in a worker with an exporter, its parent collects their files)."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)
    cache = PipelineCache(settings.device, pick_dtype(settings.dtype, settings.device),
                          allow_pickle=settings.allow_pickle_weights)
    store = JobStore(client, settings.record_ttl_s, lease_s=settings.lease_s)
    metrics = WorkerMetrics(None, settings.device, cache_stats=functools.partial(legacy_cache_stats, cache))
    return JobRunner(store, Storage(settings), cache, settings.progress_interval_s,
                     publish=functools.partial(enqueue, make_celery(settings)), metrics=metrics,
                     allowlist=parse_patterns(settings.checkpoint_allowlist),
                     time_limit_s=settings.job_time_limit_s, on_time_limit=replace_child)


def build_reaper(settings: Settings) -> Reaper:
    """A reaper with its own Redis client and its own Celery app for publishing."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30,
                                  socket_timeout=REAPER_SOCKET_TIMEOUT_S,
                                  socket_connect_timeout=REAPER_SOCKET_TIMEOUT_S)
    store = JobStore(client, settings.record_ttl_s, lease_s=settings.lease_s)
    # An outbox entry a whole lease old has outlived the reaper that wrote it.
    return Reaper(store, functools.partial(enqueue, make_celery(settings)), settings.max_attempts,
                  silence_s=settings.lease_s)


def reaper_step(settings: Settings) -> type[bootsteps.StartStopStep]:
    """A worker bootstep that runs the reaper every ``reaper_interval_s`` on the parent's timer."""

    class ReaperStep(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Timer",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.entry: Entry | None = None

        def start(self, parent: Any) -> None:
            reaper, metrics = build_reaper(settings), ReaperMetrics(None)
            self.entry = parent.timer.call_repeatedly(settings.reaper_interval_s,
                                                      lambda: metrics.record(reaper.tick()), priority=10)

        def stop(self, parent: Any) -> None:
            if self.entry is not None:
                self.entry.cancel()

    return ReaperStep


def _drain_children(**_: Any) -> None:
    """Parent, shutdown starting: tell the pool child to finish or give back its job."""
    for child in billiard.process.active_children():
        if child.pid is not None:
            try:
                os.kill(child.pid, DRAIN_SIGNAL)
            except ProcessLookupError:
                continue


def create_worker_app(settings: Settings, exporter: MetricsExporter | None = None) -> Celery:
    """The Celery app with the job task registered and the child's runtime wired in; with an
    ``exporter``, the child's metrics go to its directory and the parent serves them."""
    app = make_celery(settings)
    app.steps["worker"].add(reaper_step(settings))
    if exporter is not None:
        app.steps["worker"].add(exporter.step())
    runtime: dict[str, JobRunner] = {}

    @signals.worker_process_init.connect(weak=False)
    def _init_child(**_: Any) -> None:
        runtime["runner"] = build_runner(settings)
        signal.signal(DRAIN_SIGNAL, lambda *_: runtime["runner"].drain(settings.shutdown_grace_s))

    if exporter is not None:
        signals.worker_process_shutdown.connect(lambda pid=None, **_: exporter.child_exiting(pid), weak=False)

    signals.worker_shutting_down.connect(_drain_children, weak=False)

    @signals.after_setup_logger.connect(weak=False)
    def _quiet(**_: Any) -> None:
        # "Task received"/"succeeded" lines for every job cost time on the hot path; the
        # job record already holds each job's timestamps and outcome.
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)

    @signals.worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        if settings.worker_ready_file:
            Path(settings.worker_ready_file).touch()

    @app.task(name=TASK_NAME, ignore_result=True, acks_late=True, bind=True, time_limit=celery_time_limit(settings))
    def run_job(task: Any, job_id: str) -> str:
        if "runner" not in runtime:  # solo pool or a direct call: no process-init signal
            runtime["runner"] = build_runner(settings)
        return runtime["runner"].run(job_id, worker=f"{task.request.hostname} pid={os.getpid()}")

    return app


def worker_argv(families: list[str], hostname: str, loglevel: str, quiet: bool = False) -> list[str]:
    """Celery's command line; ``quiet`` leaves out the start-up banner (not a log line: JSON logs)."""
    queues = ",".join(queue_name(f) for f in families)
    return [*(["--quiet"] if quiet else []), "worker", "-P", "prefork", "-c", "1", "-Q", queues, "-n", hostname,
            "-l", loglevel, "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair"]


def run_worker(settings: Settings, families: list[str], hostname: str, loglevel: str = "INFO") -> None:
    """Start consuming ``families``' queues; returns when the worker shuts down."""
    exporter = MetricsExporter(settings.worker_metrics_port, families, settings.device) \
        if settings.worker_metrics_port else None
    try:
        app = create_worker_app(settings, exporter)
        app.worker_main(worker_argv(families, hostname, loglevel, quiet=settings.log_format == "json"))
    finally:
        if exporter is not None:
            exporter.close()
