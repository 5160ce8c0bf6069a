"""``hotpipe worker``: a Celery worker pinned to model families and one device.

The pool is prefork with one child: the parent only consumes messages and never
touches the device; the child builds its runtime in ``worker_process_init`` (cheap:
connections only) and loads pipelines lazily on the first job, so slow loads can't
trip Celery's child start-up timeout.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import redis
import torch
from celery import Celery, signals

from hotpipe.shared.celery_app import TASK_NAME, make_celery, queue_name
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.job_runner import JobRunner

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_dtype(setting: str, device: str) -> torch.dtype:
    """``auto`` is fp16 on CUDA and fp32 on CPU; otherwise the named dtype."""
    if setting == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return DTYPES[setting]


def build_runner(settings: Settings) -> JobRunner:
    """The per-process runtime: Redis, S3 and an empty pipeline cache on the settings' device."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)
    cache = PipelineCache(settings.device, pick_dtype(settings.dtype, settings.device))
    return JobRunner(JobStore(client, settings.record_ttl_s), Storage(settings), cache, settings.progress_interval_s)


def create_worker_app(settings: Settings) -> Celery:
    """The Celery app with the job task registered and the child's runtime wired in."""
    app = make_celery(settings)
    runtime: dict[str, JobRunner] = {}

    @signals.worker_process_init.connect(weak=False)
    def _init_child(**_: Any) -> None:
        runtime["runner"] = build_runner(settings)

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

    @app.task(name=TASK_NAME, ignore_result=True, acks_late=True)
    def run_job(job_id: str) -> str:
        if "runner" not in runtime:  # solo pool or a direct call: no process-init signal
            runtime["runner"] = build_runner(settings)
        return runtime["runner"].run(job_id)

    return app


def worker_argv(families: list[str], hostname: str, loglevel: str) -> list[str]:
    queues = ",".join(queue_name(f) for f in families)
    return ["worker", "-P", "prefork", "-c", "1", "-Q", queues, "-n", hostname, "-l", loglevel,
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair"]


def run_worker(settings: Settings, families: list[str], hostname: str, loglevel: str = "INFO") -> None:
    """Start consuming ``families``' queues; returns when the worker shuts down."""
    app = create_worker_app(settings)
    app.worker_main(worker_argv(families, hostname, loglevel))
