"""The job time limit, in-process: the heartbeat thread ends the job and calls ``on_limit``."""

from __future__ import annotations

import threading

import pytest
import redis
import torch

from hotpipe.shared.settings import Settings
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.heartbeat import TIME_LIMIT
from hotpipe.workers.job_runner import JobRunner
from tests.workers.test_job_runner import submit


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=60)


def test_a_job_past_the_time_limit_ends_failed_and_the_hook_runs(store: JobStore, storage: Storage,
                                                                 settings: Settings) -> None:
    called = threading.Event()
    runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0,
                       time_limit_s=0.5, on_time_limit=called.set)
    job_id = submit(store, settings, num_inference_steps=999, height=64, width=64)

    outcome = runner.run(job_id)

    record = store.get(job_id).record  # type: ignore[union-attr]
    assert record.status is Status.FAILED and record.error is not None, record
    assert record.error.code == TIME_LIMIT and "time limit" in record.error.message
    assert called.is_set()
    assert outcome == "lost"  # the job's own thread stood down at its next step
    assert not storage.exists(storage.image_key(job_id, 0, "png"))
    assert not storage.exists(storage.sidecar_key(job_id))


def test_a_job_within_the_time_limit_is_untouched(store: JobStore, storage: Storage, settings: Settings) -> None:
    called = threading.Event()
    runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0,
                       time_limit_s=600, on_time_limit=called.set)
    job_id = submit(store, settings)

    assert runner.run(job_id) == "succeeded"
    assert not called.is_set()
