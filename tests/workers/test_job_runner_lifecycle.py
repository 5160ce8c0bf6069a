"""JobRunner lifecycle additions: stage timestamps, the per-job timeout_s."""

from __future__ import annotations

import pytest

from hotpipe.shared import keys
from hotpipe.shared.job import Stage
from hotpipe.shared.settings import Settings
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers import job_runner as job_runner_module
from hotpipe.workers.job_runner import TIMEOUT, JobRunner
from tests.workers.test_job_runner import job_runner, store, submit

__all__ = ["job_runner", "store"]  # fixtures


def test_each_stage_is_stamped_in_order(job_runner: JobRunner, store: JobStore, settings: Settings) -> None:
    job_id = submit(store, settings)
    assert job_runner.run(job_id) == "succeeded"
    rec = store.get(job_id).record  # type: ignore[union-attr]
    assert rec.stage is Stage.FINISHED
    stamps = [rec.created_at, rec.queued_at, rec.loading_at, rec.running_at, rec.uploading_at, rec.finished_at]
    assert all(stamps) and stamps == sorted(stamps)  # type: ignore[type-var]
    assert rec.started_at == rec.loading_at


def spec_timeout(store: JobStore, job_id: str, timeout_s: float) -> None:
    """Give a stored job a timeout_s (as a submit with timeout_s does)."""
    job = store.get(job_id)
    assert job is not None
    store.redis.hset(keys.job(job_id), "spec", job.spec.model_copy(update={"timeout_s": timeout_s}).model_dump_json())


def test_a_job_past_its_timeout_before_running_fails_timeout(job_runner: JobRunner, store: JobStore,
                                                             settings: Settings, storage: Storage) -> None:
    job_id = submit(store, settings)
    spec_timeout(store, job_id, 1e-9)
    assert job_runner.run(job_id) == "failed"
    rec = store.get(job_id).record  # type: ignore[union-attr]
    assert rec.error is not None and rec.error.code == TIMEOUT and rec.result is None
    assert not storage.exists(storage.image_key(job_id, 0, "png"))


def test_a_job_past_its_timeout_mid_run_stops_at_the_next_step(job_runner: JobRunner, store: JobStore,
                                                               settings: Settings, storage: Storage,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = submit(store, settings, num_inference_steps=20)
    spec_timeout(store, job_id, 3600.0)
    progress = store.progress

    def time_flies(jid: str, attempt: int, step: int, total: int) -> int:
        if step == 3:  # an hour passes during step 3
            real = job_runner_module.time.monotonic
            monkeypatch.setattr(job_runner_module.time, "monotonic", lambda: real() + 7200)
        return progress(jid, attempt, step, total)

    store.progress = time_flies  # type: ignore[method-assign,assignment]
    assert job_runner.run(job_id) == "failed"
    rec = store.get(job_id).record  # type: ignore[union-attr]
    assert (rec.status, rec.error.code if rec.error else None) == (Status.FAILED, TIMEOUT)
    assert rec.progress is not None and rec.progress.step == 3
    assert not storage.exists(storage.image_key(job_id, 0, "png"))
    assert not storage.exists(storage.sidecar_key(job_id))


def test_progress_writes_are_throttled_but_the_last_step_always_lands(store: JobStore, storage: Storage,
                                                                      settings: Settings) -> None:
    import torch

    from hotpipe.workers.cache import PipelineCache

    runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=3600)
    job_id = submit(store, settings, num_inference_steps=20)
    written: list[int] = []
    progress = store.progress

    def count(jid: str, attempt: int, step: int, total: int) -> int:
        written.append(step)
        return progress(jid, attempt, step, total)

    store.progress = count  # type: ignore[method-assign,assignment]
    assert runner.run(job_id) == "succeeded"
    assert written == []  # no progress write of its own for a 20-step job with a long interval:
    assert store.get(job_id).record.progress.step == 20  # type: ignore[union-attr]  # the last lands with uploading
