"""Dynamic batching in-process: a claimed job takes compatible queued jobs and runs them in one call,
each ending on its own; against the real redis-server, the S3 server and the tiny SD checkpoint."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np
import pytest
import redis
import torch
from PIL import Image
from prometheus_client import CollectorRegistry

from hotpipe.shared.batching import Batcher, scan, waiting_lists
from hotpipe.shared.checkpoints import resolve
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.messages import run_message
from hotpipe.shared.queues import queue_depths
from hotpipe.shared.settings import Settings
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.job_runner import JobRunner
from hotpipe.workers.metrics import WorkerMetrics
from hotpipe.workers.worker import build_batcher

WORKER = "batcher@test pid=1"


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=60)


def make_runner(store: JobStore, storage: Storage, max_images: int) -> JobRunner:
    runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0)
    if max_images > 1:
        runner.batcher = Batcher.for_worker(store.redis, "", ["stable-diffusion"], max_images, store.lease_ms)
    return runner


def submit(store: JobStore, settings: Settings, **params: Any) -> str:
    """A queued tiny-SD job with its run message on the family queue, as the API writes it."""
    resolved = resolve("tiny-sd", Task.TEXT2IMAGE, settings.model_root)
    job_id = new_job_id()
    spec = JobSpec(resolved=resolved, task=Task.TEXT2IMAGE,
                   params={"prompt": "x", "num_inference_steps": 3, "height": 32, "width": 32, "seed": 1, **params})
    store.create(job_id, family=resolved.family, pipeline=resolved.pipeline, checkpoint="tiny-sd", revision=None,
                 task=Task.TEXT2IMAGE, spec=spec, message=run_message(job_id, resolved.base_family))
    return job_id


def waiting(store: JobStore) -> int:
    """Run messages waiting in the family queue (every priority list)."""
    return queue_depths(store.redis, ["stable-diffusion"])["stable-diffusion"]


def pixels(store: JobStore, storage: Storage, job_id: str) -> list[np.ndarray]:
    record = store.get(job_id).record  # type: ignore[union-attr]
    assert record.result is not None
    return [np.asarray(Image.open(io.BytesIO(storage.get(i.key))).convert("RGB"), dtype=np.int16)
            for i in record.result.images]


def pop_first(store: JobStore, job_id: str) -> None:
    """Take the first job's message off its list, as Celery's BRPOP does before the task runs."""
    for c in scan(store.redis, waiting_lists(None, ["stable-diffusion"])):
        if c.job_id == job_id:
            store.redis.lrem(c.list_key, 1, c.payload)


def run_first(runner: JobRunner, store: JobStore, job_id: str) -> str:
    pop_first(store, job_id)
    return runner.run(job_id, WORKER)


def test_a_batch_reproduces_each_job_run_alone(store: JobStore, storage: Storage, settings: Settings) -> None:
    prompts = [("a cat", 1, 1), ("a dog", 7, 2), ("a boat", 3, 1)]  # (prompt, seed, num_images): 4 images
    batched = [submit(store, settings, prompt=p, seed=s, num_images=n) for p, s, n in prompts]
    runner = make_runner(store, storage, 4)
    runner.metrics = WorkerMetrics(CollectorRegistry())
    assert run_first(runner, store, batched[0]) == "succeeded"
    registry = runner.metrics.registry
    assert registry is not None
    assert registry.get_sample_value("hotpipe_worker_batch_images_count") == 1  # one call...
    assert registry.get_sample_value("hotpipe_worker_batch_images_sum") == 4  # ...of four images
    assert registry.get_sample_value("hotpipe_worker_images_total") == 4
    records = [store.get(j).record for j in batched]  # type: ignore[union-attr]
    assert [r.status for r in records] == [Status.SUCCEEDED] * 3
    assert waiting(store) == 0  # every taken message left its list
    for job_id in batched:  # one call made them all
        sidecar = json.loads(storage.get(storage.sidecar_key(job_id)))
        assert sidecar["provenance"]["batch"] == {"jobs": 3, "images": 4}

    alone = make_runner(store, storage, 1)
    worst = 0
    for job_id, (p, s, n) in zip(batched, prompts, strict=True):
        solo = submit(store, settings, prompt=p, seed=s, num_images=n)
        assert run_first(alone, store, solo) == "succeeded"
        for a, b in zip(pixels(store, storage, job_id), pixels(store, storage, solo), strict=True):
            worst = max(worst, int(np.abs(a - b).max()))
    print(f"largest difference, batched vs alone: {worst} levels of 255")
    assert worst <= 2, f"a batched image differs from the job alone by {worst} levels of 255"


def test_incompatible_jobs_stay_queued(store: JobStore, storage: Storage, settings: Settings) -> None:
    first = submit(store, settings)
    other_size = submit(store, settings, height=64, width=64)
    other_steps = submit(store, settings, num_inference_steps=2)
    assert run_first(make_runner(store, storage, 4), store, first) == "succeeded"
    for job_id in (other_size, other_steps):
        assert store.get(job_id).record.status is Status.QUEUED  # type: ignore[union-attr]
    assert waiting(store) == 2


def test_max_batch_counts_images(store: JobStore, storage: Storage, settings: Settings) -> None:
    first = submit(store, settings, num_images=2)
    too_many = submit(store, settings, num_images=3)  # 2 + 3 > 4: stays queued
    fits = submit(store, settings, num_images=2)
    assert run_first(make_runner(store, storage, 4), store, first) == "succeeded"
    assert store.get(fits).record.status is Status.SUCCEEDED  # type: ignore[union-attr]
    assert store.get(too_many).record.status is Status.QUEUED  # type: ignore[union-attr]


def test_a_canceled_job_leaves_its_batch_and_the_others_finish(store: JobStore, storage: Storage,
                                                               settings: Settings) -> None:
    jobs = [submit(store, settings, prompt=f"p{i}", num_inference_steps=6) for i in range(3)]
    progress = store.progress

    def cancel_second(job_id: str, attempt: int, step: int, total: int) -> int:
        if job_id == jobs[1] and step == 2:
            store.cancel(job_id)
        return progress(job_id, attempt, step, total)

    store.progress = cancel_second  # type: ignore[method-assign]
    assert run_first(make_runner(store, storage, 4), store, jobs[0]) == "succeeded"
    statuses = [store.get(j).record.status for j in jobs]  # type: ignore[union-attr]
    assert statuses == [Status.SUCCEEDED, Status.CANCELED, Status.SUCCEEDED]
    assert not storage.exists(storage.image_key(jobs[1], 0, "png"))
    assert not storage.exists(storage.sidecar_key(jobs[1]))


def test_a_job_lost_to_a_newer_attempt_stands_down_alone(store: JobStore, storage: Storage,
                                                          settings: Settings) -> None:
    jobs = [submit(store, settings, prompt=f"p{i}", num_inference_steps=6) for i in range(2)]
    progress = store.progress

    def supersede_second(job_id: str, attempt: int, step: int, total: int) -> int:
        if job_id == jobs[1] and step == 2:  # a reaper takes it back and another worker claims it
            store.take_back(job_id, attempt, 5)
            store.claim_job(job_id, "another pid=2")
        return progress(job_id, attempt, step, total)

    store.progress = supersede_second  # type: ignore[method-assign]
    assert run_first(make_runner(store, storage, 4), store, jobs[0]) == "succeeded"
    second = store.get(jobs[1])
    assert second is not None and second.record.status is Status.RUNNING and second.worker == "another pid=2"
    assert second.record.attempts == 2 and second.record.result is None


def test_a_worker_builds_a_batcher_only_above_one(store: JobStore, storage: Storage, settings: Settings) -> None:
    runner = make_runner(store, storage, 1)
    for value in ("1", "auto"):  # auto is 1 on CPU: no batcher, so no queue is ever scanned
        assert build_batcher(dataclasses.replace(settings, max_batch=value), runner, "w@h", ["sd"]) is None
    batcher = build_batcher(dataclasses.replace(settings, max_batch="6", batch_wait_ms=5.0), runner, "w@h", ["sd"])
    assert batcher is not None and (batcher.max_images, batcher.wait_ms, len(batcher.lists)) == (6, 5.0, 20)
