"""``hotpipe worker``: a Celery worker pinned to model families and one device.

The pool is prefork with one child: the parent only consumes messages and never
touches the device (it imports torch, but never initialises CUDA); the child builds its
runtime in ``worker_process_init`` (cheap: connections only), pins its device, and loads
pipelines lazily on the first job — or, with ``--preload``, in a thread of its own, so a
slow load never trips Celery's child start-up timeout.

A worker consumes its own queue (``queues.worker_queue``: jobs the producer routed to it
because it holds their checkpoint) from the start, but the producer routes there only once
its registry record says ready, and the family queues are added only after the preload
finished (``PreloadGate``); the ready file, the readiness probe's, is touched then.

Recovery lives in three places.  The child heartbeats the lease of the job it runs
(``heartbeat.py``) and the worker's liveness in the registry (``presence.py``).  The parent
hands back the job of a pool child that died at once (``recovery.py``), and runs the reaper on
its event-loop timer (a bootstep, no thread in a process that forks), which takes back the jobs
of workers silent in the registry and of lapsed leases; every worker reaps, atomically per job.
On SIGTERM the parent starts Celery's warm shutdown and tells the child to drain: the running
job gets ``shutdown_grace_s`` to finish, then is given back to the queue.  If the process is
killed before that, its registry record goes silent and some reaper requeues the job.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import billiard.process
import torch
from celery import Celery, bootsteps, signals
from kombu.asynchronous.timer import Entry
from redis.backoff import NoBackoff
from redis.retry import Retry

from hotpipe.shared.celery_app import TASK_NAME, make_celery, node_is_live, node_name
from hotpipe.shared.checkpoints import Resolved, resolve
from hotpipe.shared.connections import sync_client
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.job import Task
from hotpipe.shared.messages import enqueue
from hotpipe.shared.popularity import Popularity
from hotpipe.shared.queues import family_queue, worker_queue
from hotpipe.shared.reaper import SOCKET_TIMEOUT_S, reaper_from_settings
from hotpipe.shared.registry import Registry
from hotpipe.shared.safety import parse_patterns
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers import memory
from hotpipe.workers.adapters import Adapters
from hotpipe.workers.cache import Counts, PipelineCache
from hotpipe.workers.exporter import MetricsExporter
from hotpipe.workers.job_runner import JobRunner
from hotpipe.workers.metrics import ReaperMetrics, WorkerMetrics
from hotpipe.workers.presence import Presence
from hotpipe.workers.recovery import LostChildWatch, attempt_worker, lost_child_request

log = logging.getLogger(__name__)

#: what the parent sends its pool child when a shutdown starts: drain the running job.
#: (SIGTERM itself is reset to "die" in pool children, and billiard uses SIGUSR1.)
DRAIN_SIGNAL = signal.SIGUSR2
#: socket timeouts of the popularity reads an eviction makes (then it evicts by local uses)
POPULARITY_TIMEOUT_S = 1.0

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


def family_dtypes(settings: Settings) -> dict[str, torch.dtype]:
    """Per-family dtypes from the configuration; on CPU every family runs in HOTPIPE_DTYPE."""
    if not settings.device.startswith("cuda"):
        return {}
    return {family: DTYPES[name] for family, name in settings.family_dtype_map().items()}


def build_cache(settings: Settings) -> PipelineCache:
    counts = popularity_counts(settings) if settings.cache_policy == "popular" else None
    return PipelineCache(settings.device, pick_dtype(settings.dtype, settings.device),
                         budget_bytes=settings.cache_budget_mb * 2**20, max_pipelines=settings.cache_max_pipelines,
                         policy=settings.cache_policy, counts=counts)


def popularity_counts(settings: Settings) -> Counts:
    """The global popularity reader the ``popular`` policy evicts by: its own Redis client, with
    short timeouts and no retries, so an eviction while Redis is away falls back at once."""
    client = sync_client(settings, decode_responses=True, socket_timeout=POPULARITY_TIMEOUT_S,
                                  socket_connect_timeout=POPULARITY_TIMEOUT_S, retry=Retry(NoBackoff(), 0))
    return Popularity(client, settings.popularity_half_life_s).counts


def build_runner(settings: Settings) -> JobRunner:
    """The per-process runtime: Redis, S3, an empty pipeline cache on the settings' device, and job
    metrics (registered nowhere: in a worker with an exporter, its parent collects their files)."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    client = sync_client(settings, decode_responses=True, health_check_interval=30)
    cache = build_cache(settings)
    store = JobStore(client, settings.record_ttl_s, lease_s=settings.lease_s)
    metrics = WorkerMetrics(None, settings.device, cache_stats=cache.stats)
    return JobRunner(store, Storage(settings), cache, settings.progress_interval_s,
                     publish=functools.partial(enqueue, client), metrics=metrics,
                     allowlist=parse_patterns(settings.checkpoint_allowlist),
                     time_limit_s=settings.job_time_limit_s, on_time_limit=replace_child,
                     dtypes=family_dtypes(settings),
                     adapters=Adapters(settings.cache_max_adapters, count=metrics.adapter_event))


def pin_device(device: str) -> None:
    """Child only: make ``device`` the current CUDA device (the first CUDA call of the process)."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))


def preload(runner: JobRunner, settings: Settings, families: list[str]) -> None:
    """Load every ``settings.preload`` checkpoint into the runner's cache (raises on the first failure)."""
    for name in settings.preload_list():
        resolved = resolve_any_task(name, settings)
        if resolved.base_family not in families:
            log.warning("preload %s: family %s is not served by this worker (%s)", name,
                        resolved.base_family, ", ".join(families))
        runner.cache.load(runner.cache_key(resolved))
        log.info("preloaded %s", name)


def resolve_any_task(name: str, settings: Settings) -> Resolved:
    """``name`` resolved for the first task it supports (a refiner has no text2image)."""
    error: InvalidRequest | None = None
    for task in Task:
        try:
            return resolve(name, task, settings.model_root)
        except InvalidRequest as exc:
            error = exc
    raise ValueError(f"can't preload {name!r}: {error}")


def start_presence(runner: JobRunner, settings: Settings, name: str, families: list[str]) -> Presence:
    """Child: publish this worker in the registry, and keep it published."""
    client = sync_client(settings, decode_responses=True, health_check_interval=30,
                                  socket_timeout=SOCKET_TIMEOUT_S)
    presence = Presence(Registry(client, settings.worker_ttl_s), name, families, runner.cache, runner.adapters,
                        interval_s=settings.worker_heartbeat_s)
    runner.cache.on_change = presence.publish
    runner.on_job = presence.set_job
    presence.start()
    return presence


def warm_up(runner: JobRunner, presence: Presence, settings: Settings, families: list[str], done: Path) -> None:
    """Child thread: preload, then say ready (registry record, and ``done`` for the parent's gate)."""
    try:
        preload(runner, settings, families)
    except Exception:
        log.exception("preload failed; this worker stays unready")
        return
    presence.set_ready()
    done.touch()


def reaper_step(settings: Settings, parent_side: dict[str, Any]) -> type[bootsteps.StartStopStep]:
    """A worker bootstep that runs the reaper every ``reaper_interval_s`` on the parent's timer (and
    leaves it and its metrics in ``parent_side`` for the dead-child hand-back, ``recovery.py``)."""

    class ReaperStep(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Timer",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.entry: Entry | None = None

        def start(self, parent: Any) -> None:
            reaper, metrics = reaper_from_settings(settings), ReaperMetrics(None)
            parent_side.update(reaper=reaper, metrics=metrics)
            self.entry = parent.timer.call_repeatedly(settings.reaper_interval_s,
                                                      lambda: metrics.record(reaper.tick()), priority=10)

        def stop(self, parent: Any) -> None:
            if self.entry is not None:
                self.entry.cancel()

    return ReaperStep


def preload_gate(settings: Settings, families: list[str], done: Path) -> type[bootsteps.StartStopStep]:
    """A worker bootstep: once the child's preload is ``done``, consume the family queues and
    touch the ready file.  Polls on the parent's timer; the parent never loads anything."""

    class PreloadGate(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Timer",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.entry: Entry | None = None

        def start(self, parent: Any) -> None:
            def check() -> None:
                consumer = getattr(parent, "consumer", None)
                if not done.exists() or consumer is None or consumer.task_consumer is None:
                    return
                for family in families:
                    consumer.add_task_queue(family_queue(family))
                if settings.worker_ready_file:
                    Path(settings.worker_ready_file).touch()
                log.info("ready: consuming %s", ", ".join(family_queue(f) for f in families))
                if self.entry is not None:
                    self.entry.cancel()
            self.entry = parent.timer.call_repeatedly(0.2, check, priority=5)

        def stop(self, parent: Any) -> None:
            if self.entry is not None:
                self.entry.cancel()

    return PreloadGate


def _drain_children(**_: Any) -> None:
    """Parent, shutdown starting: tell the pool child to finish or give back its job."""
    for child in billiard.process.active_children():
        if child.pid is not None:
            try:
                os.kill(child.pid, DRAIN_SIGNAL)
            except ProcessLookupError:
                continue


def wire_child(settings: Settings, families: list[str], name: str, runtime: dict[str, Any], done: Path) -> None:
    """The pool child's start (runtime, device, presence, preload thread) and end (leave the registry)."""

    @signals.worker_process_init.connect(weak=False)
    def _init_child(**_: Any) -> None:
        pin_device(settings.device)
        runner = runtime["runner"] = build_runner(settings)
        memory.settle()
        signal.signal(DRAIN_SIGNAL, lambda *_: runner.drain(settings.shutdown_grace_s))
        if families:
            presence = runtime["presence"] = start_presence(runner, settings, name, families)
            threading.Thread(target=warm_up, args=(runner, presence, settings, families, done),
                             name="preload", daemon=True).start()

    @signals.worker_process_shutdown.connect(weak=False)
    def _leave(**_: Any) -> None:
        if "presence" in runtime:
            runtime["presence"].stop()


def create_worker_app(settings: Settings, families: list[str] | None = None, name: str = "",
                      exporter: MetricsExporter | None = None) -> Celery:
    """The Celery app with the job task registered and the child's runtime wired in.

    With ``families`` (the worker command), the worker also publishes itself in the registry
    as ``name``, preloads, and consumes the family queues only once the preload is done.  With
    an ``exporter``, the child's metrics go to its directory and the parent serves them.
    """
    app = make_celery(settings)
    parent_side: dict[str, Any] = {}  # the parent's reaper and its metrics, once started
    app.steps["worker"].add(reaper_step(settings, parent_side))
    app.steps["worker"].add(LostChildWatch)
    if exporter is not None:
        app.steps["worker"].add(exporter.step())
    runtime: dict[str, Any] = {}
    done = Path(tempfile.mkdtemp(prefix="hotpipe-worker-")) / "preloaded"
    if families:
        app.steps["worker"].add(preload_gate(settings, families, done))

    wire_child(settings, families or [], name, runtime, done)

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
        if settings.worker_ready_file and not families:  # else the preload gate says when
            Path(settings.worker_ready_file).touch()

    @app.task(name=TASK_NAME, ignore_result=True, acks_late=True, bind=True, time_limit=celery_time_limit(settings),
              Request=lost_child_request(settings, parent_side))
    def run_job(task: Any, job_id: str) -> str:
        if "runner" not in runtime:  # solo pool or a direct call: no process-init signal
            runtime["runner"] = build_runner(settings)
        return runtime["runner"].run(job_id, worker=attempt_worker(task.request.hostname, os.getpid()))

    return app


def worker_argv(name: str, loglevel: str, quiet: bool = False, events: bool = True) -> list[str]:
    """Celery's arguments: at first only the worker's own queue (the gate adds the families');
    ``quiet`` leaves out the start-up banner (not a log line: JSON logs); without ``events``, no
    heartbeats either (task events follow ``worker_send_task_events``)."""
    return [*(["--quiet"] if quiet else []), "worker", "-P", "prefork", "-c", "1", "-Q", worker_queue(name),
            "-n", name, "-l", loglevel, "--without-gossip", "--without-mingle",
            *([] if events else ["--without-heartbeat"]), "-O", "fair"]


class NameTaken(RuntimeError):
    """A live worker already has the node name this one was to start with."""


def run_worker(settings: Settings, families: list[str], hostname: str | None, loglevel: str = "INFO") -> None:
    """Preload, then consume ``families``' queues and the worker's own; returns at shutdown.

    ``hostname`` None: ``hotpipe-{pid}@{host}``.  A name a live worker answers to is refused
    (``NameTaken``) before anything starts: two workers with one name would share a registry
    record and an own queue.
    """
    name = node_name(hostname, os.getpid())
    if node_is_live(make_celery(settings), name):
        raise NameTaken(f"a worker named {name} is already running (it answered a ping); start this one with "
                        "another --hostname, or leave --hostname out for a unique hotpipe-<pid>@<host>")
    exporter = MetricsExporter(settings.worker_metrics_port, families, settings.device) \
        if settings.worker_metrics_port else None
    try:
        app = create_worker_app(settings, families, name, exporter)
        app.worker_main(worker_argv(name, loglevel, quiet=settings.log_format == "json",
                                    events=settings.worker_events))
    finally:
        if exporter is not None:
            exporter.close()
