"""Out of memory during a load or a run: evict the others, retry once, else fail with ``out_of_memory``.

The errors are injected (a loader / a pipeline call that raises); everything else is real:
the redis-server, the S3 server, the tiny checkpoints, the cache.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch

from hotpipe.shared.settings import Settings
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers import runner as runner_module
from hotpipe.workers.cache import CacheKey, PipelineCache, load_pipeline
from hotpipe.workers.job_runner import JobRunner
from tests.workers.test_job_runner import store, submit

__all__ = ["store"]  # the fixture, re-used


@pytest.fixture
def two_checkpoints(settings: Settings) -> Settings:
    """The model root with a second copy of tiny-sd, ``tiny-sd-b`` (another cache key)."""
    if not (settings.model_root / "tiny-sd-b").exists():
        shutil.copytree(settings.model_root / "tiny-sd", settings.model_root / "tiny-sd-b")
    return settings


def error_of(store: JobStore, job_id: str) -> tuple[Status, str | None]:
    record = store.get(job_id).record  # type: ignore[union-attr]
    return record.status, record.error.code if record.error else None


def oom_calls(monkeypatch: pytest.MonkeyPatch, times: int, error: type[BaseException]) -> list[int]:
    """Make the next ``times`` pipeline calls raise ``error``; returns the call log."""
    calls: list[int] = []
    real = runner_module.run

    def run(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise error("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(*args, **kwargs)
    monkeypatch.setattr(runner_module, "run", run)
    return calls


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, MemoryError])
def test_oom_during_the_run_evicts_the_others_and_retries_once(
        two_checkpoints: Settings, store: JobStore, storage: Storage, monkeypatch: pytest.MonkeyPatch,
        error: type[BaseException]) -> None:
    cache = PipelineCache("cpu", torch.float32)
    job_runner = JobRunner(store, storage, cache, progress_interval_s=0)
    assert job_runner.run(submit(store, two_checkpoints, "tiny-sd-b")) == "succeeded"
    calls = oom_calls(monkeypatch, 1, error)

    assert job_runner.run(job_id := submit(store, two_checkpoints)) == "succeeded"
    assert len(calls) == 2 and error_of(store, job_id) == (Status.SUCCEEDED, None)
    assert cache.stats().checkpoints == ["tiny-sd"] and cache.stats().evictions == 1


def test_oom_twice_fails_the_job_and_the_worker_goes_on(two_checkpoints: Settings, store: JobStore,
                                                        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    job_runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0)
    calls = oom_calls(monkeypatch, 2, torch.OutOfMemoryError)

    assert job_runner.run(failed := submit(store, two_checkpoints)) == "failed"
    assert error_of(store, failed) == (Status.FAILED, "out_of_memory") and len(calls) == 2
    assert job_runner.run(after := submit(store, two_checkpoints)) == "succeeded"  # still healthy
    assert error_of(store, after) == (Status.SUCCEEDED, None)


def test_oom_on_every_load_fails_the_job_with_out_of_memory(settings: Settings, store: JobStore,
                                                            storage: Storage) -> None:
    loads: list[str] = []

    def loader(key: CacheKey, device: str) -> Any:
        loads.append(key.location)
        if len(loads) <= 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return load_pipeline(key, device)

    job_runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32, loader=loader), progress_interval_s=0)
    assert job_runner.run(failed := submit(store, settings)) == "failed"
    assert error_of(store, failed) == (Status.FAILED, "out_of_memory") and len(loads) == 2
    assert job_runner.run(submit(store, settings)) == "succeeded"


def test_dtype_follows_the_family_configuration(settings: Settings, store: JobStore, storage: Storage) -> None:
    job_runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0,
                           dtypes={"stable-diffusion": torch.bfloat16})
    assert job_runner.run(submit(store, settings)) == "succeeded"
    (key, _, _), = job_runner.cache.holds()
    assert key.dtype == torch.bfloat16 and key.name == "tiny-sd"
