"""JobRunner in-process against the real redis-server and S3 server: every way a job ends."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import torch

from hotpipe.shared.checkpoints import resolve
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.settings import Settings
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers import job_runner as job_runner_module
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.job_runner import JobRunner, error_code


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=60)


@pytest.fixture
def job_runner(store: JobStore, storage: Storage) -> JobRunner:
    return JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0)


def submit(store: JobStore, settings: Settings, checkpoint: str = "tiny-sd", **params: Any) -> str:
    resolved = resolve(checkpoint, Task.TEXT2IMAGE, settings.model_root)
    job_id = new_job_id()
    spec = {"resolved": resolved.to_json(), "task": "text2image", "inputs": {}, "output_format": "png",
            "params": {"prompt": "x", "num_inference_steps": 2, "height": 32, "width": 32, "seed": 1, **params}}
    store.create(job_id, family=resolved.family, pipeline=resolved.pipeline, checkpoint=checkpoint,
                 revision=None, task=Task.TEXT2IMAGE, spec=spec)
    return job_id


def test_success_writes_objects_then_the_record(job_runner: JobRunner, store: JobStore, settings: Settings,
                                                storage: Storage) -> None:
    job_id = submit(store, settings)
    assert job_runner.run(job_id) == "succeeded"
    record = store.get(job_id).record  # type: ignore[union-attr]
    assert record.status is Status.SUCCEEDED and record.result is not None
    assert all(storage.exists(i.key) for i in record.result.images)
    assert storage.exists(storage.sidecar_key(job_id))
    assert job_runner.run(job_id) == "skipped"  # a redelivery stands down


def test_cancel_during_run_discards_output(job_runner: JobRunner, store: JobStore, settings: Settings,
                                           storage: Storage) -> None:
    job_id = submit(store, settings, num_inference_steps=20)
    progress = store.progress

    def cancel_then_report(jid: str, attempt: int, step: int, total: int) -> int:
        if step == 3:
            store.cancel(jid)
        return progress(jid, attempt, step, total)

    store.progress = cancel_then_report  # type: ignore[method-assign,assignment]
    assert job_runner.run(job_id) == "canceled"
    record = store.get(job_id).record  # type: ignore[union-attr]
    assert record.status is Status.CANCELED and record.progress and record.progress.step == 3
    assert not storage.exists(storage.image_key(job_id, 0, "png"))


def test_canceled_before_start_never_runs(job_runner: JobRunner, store: JobStore, settings: Settings) -> None:
    job_id = submit(store, settings)
    store.cancel(job_id)
    assert job_runner.run(job_id) == "skipped"
    assert store.get(job_id).record.attempts == 0  # type: ignore[union-attr]


def test_pipeline_error_fails_with_code_and_message(job_runner: JobRunner, store: JobStore,
                                                    settings: Settings) -> None:
    job_id = submit(store, settings, height=8, width=8, guidance_scale=-1.0, num_inference_steps=0)
    assert job_runner.run(job_id) == "failed"
    record = store.get(job_id).record  # type: ignore[union-attr]
    assert record.status is Status.FAILED and record.error is not None
    assert record.error.code != "" and record.error.message != ""


@pytest.mark.parametrize(("exc", "code"), [(torch.OutOfMemoryError("x"), "out_of_memory"),
                                           (ValueError("x"), "pipeline_error"), (RuntimeError("x"), "internal_error")])
def test_error_codes(exc: BaseException, code: str) -> None:
    assert error_code(exc) == code


def test_final_write_is_retried_while_redis_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_runner_module, "FINAL_WRITE_BACKOFF_S", (0.0, 0.0, 0.0))
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise redis.ConnectionError("down")

    assert JobRunner._finish(flaky, "succeeded") == "succeeded"
    assert len(calls) == 3

    def down() -> None:
        raise redis.ConnectionError("down")

    with pytest.raises(redis.ConnectionError):
        JobRunner._finish(down, "failed")
