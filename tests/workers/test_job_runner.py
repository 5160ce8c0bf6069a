"""JobRunner in-process against the real redis-server and S3 server: every way a job ends."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import torch

from hotpipe.shared import keys
from hotpipe.shared.checkpoints import resolve
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.messages import enqueue
from hotpipe.shared.queues import family_queue
from hotpipe.shared.settings import Settings
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers import job_runner as job_runner_module
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.job_runner import JobRunner, Outcome, error_code
from tests.jobs import claim


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=60)


@pytest.fixture
def job_runner(store: JobStore, storage: Storage) -> JobRunner:
    return JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0)


def submit(store: JobStore, settings: Settings, checkpoint: str = "tiny-sd", **params: Any) -> str:
    resolved = resolve(checkpoint, Task.TEXT2IMAGE, settings.model_root)
    job_id = new_job_id()
    spec = JobSpec(resolved=resolved, task=Task.TEXT2IMAGE,
                   params={"prompt": "x", "num_inference_steps": 2, "height": 32, "width": 32, "seed": 1, **params})
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

    assert JobRunner._finish(flaky, Outcome.SUCCEEDED) == "succeeded"
    assert len(calls) == 3

    def down() -> None:
        raise redis.ConnectionError("down")

    with pytest.raises(redis.ConnectionError):
        JobRunner._finish(down, Outcome.FAILED)


# -- leases, fencing of objects, draining ------------------------------------------------

StepHook = Callable[[str, int, int, int], int]


def on_progress(store: JobStore, hook: Callable[[str, int, int, int, StepHook], int]) -> None:
    """Run ``hook(job_id, attempt, step, total, original)`` in place of every progress write."""
    original = store.progress

    def wrapped(job_id: str, attempt: int, step: int, total: int) -> int:
        return hook(job_id, attempt, step, total, original)

    store.progress = wrapped  # type: ignore[method-assign]


def supersede(store: JobStore, job_id: str) -> int:
    """What the fleet does to an attempt whose heartbeats stopped: reap it, run a new one."""
    store.redis.zadd(keys.leases(), {job_id: 0}, xx=True)
    assert store.reap(job_id, max_attempts=3) is not None
    attempt = claim(store, job_id)
    assert attempt is not None
    return attempt


def queued_messages(store: JobStore, family: str = "stable-diffusion") -> int:
    queue = family_queue(family)  # kombu's lists for it: "{queue}" and "{queue}\x06\x16{priority}"
    return sum(int(store.redis.llen(name)) for name in [queue, *(f"{queue}\x06\x16{p}" for p in range(1, 10))])


def drain_at_step(runner: JobRunner, at: int, grace_s: float) -> Callable[[str, int, int, int, StepHook], int]:
    """A progress hook that starts a shutdown (as SIGTERM does) at step ``at``."""
    def hook(j: str, a: int, step: int, total: int, original: StepHook) -> int:
        if step == at:
            runner.drain(grace_s)
        return original(j, a, step, total)
    return hook


def test_heartbeat_keeps_a_job_that_outlasts_its_lease(redis_client: redis.Redis, storage: Storage,
                                                       settings: Settings) -> None:
    store = JobStore(redis_client, record_ttl_s=60, lease_s=1.0)
    runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0)
    job_id = submit(store, settings, num_inference_steps=3)

    def one_step_three_leases_long(j: str, a: int, step: int, total: int, original: StepHook) -> int:
        if step == 1:
            time.sleep(3.5)
        return original(j, a, step, total)

    on_progress(store, one_step_three_leases_long)
    stop, reaped = threading.Event(), list[str]()

    def reaper() -> None:
        while not stop.wait(0.02):
            reaped.extend(j for j in store.expired_leases() if store.reap(j, max_attempts=3))

    watcher = threading.Thread(target=reaper, daemon=True)
    watcher.start()
    try:
        outcome = runner.run(job_id)
    finally:
        stop.set()
        watcher.join(5)
    assert (outcome, reaped) == ("succeeded", [])
    assert store.get(job_id).record.attempts == 1  # type: ignore[union-attr]


def test_superseded_attempt_leaves_the_new_attempts_objects_alone(job_runner: JobRunner, store: JobStore,
                                                                  settings: Settings, storage: Storage) -> None:
    job_id = submit(store, settings, num_inference_steps=6)
    sidecar = storage.sidecar_key(job_id)

    def lose_the_job_at_step_2(j: str, a: int, step: int, total: int, original: StepHook) -> int:
        if step == 2:
            deadline = time.monotonic() + 60
            while not storage.exists(sidecar) and time.monotonic() < deadline:  # attempt 1's put landed
                time.sleep(0.01)
            supersede(store, j)
            storage.put(sidecar, b"attempt 2", "application/json")
        return original(j, a, step, total)

    on_progress(store, lose_the_job_at_step_2)
    assert job_runner.run(job_id) == "lost"
    job = store.get(job_id)
    assert job is not None and (job.record.status, job.record.attempts) == (Status.RUNNING, 2)
    assert storage.get(sidecar) == b"attempt 2"  # neither deleted nor overwritten by attempt 1
    assert not storage.exists(storage.image_key(job_id, 0, "png"))


def test_ownership_is_checked_right_before_the_upload(job_runner: JobRunner, store: JobStore, settings: Settings,
                                                      storage: Storage) -> None:
    job_id = submit(store, settings, num_inference_steps=2)
    set_stage = store.set_stage

    def lose_the_job_after_the_last_step(j: str, a: int, stage: str, progress: tuple[int, int] | None = None) -> int:
        if stage == "uploading":  # every step ran and the images are encoded: the puts come next
            supersede(store, j)
        return set_stage(j, a, stage, progress)

    store.set_stage = lose_the_job_after_the_last_step  # type: ignore[method-assign,assignment]
    assert job_runner.run(job_id) == "lost"
    assert not storage.exists(storage.image_key(job_id, 0, "png"))
    assert store.get(job_id).record.status is Status.RUNNING  # type: ignore[union-attr]


def test_the_last_steps_progress_rides_on_the_uploading_stage(job_runner: JobRunner, store: JobStore,
                                                             settings: Settings) -> None:
    job_id = submit(store, settings, num_inference_steps=2)
    writes: list[tuple[int, int]] = []

    def record(j: str, a: int, step: int, total: int, original: StepHook) -> int:
        writes.append((step, total))
        return original(j, a, step, total)

    on_progress(store, record)
    assert job_runner.run(job_id) == "succeeded"
    job = store.get(job_id)
    assert job is not None and job.record.progress is not None
    assert (job.record.progress.step, job.record.progress.total) == (2, 2)
    assert (2, 2) not in writes  # no progress write of its own for the last step


def test_a_cancel_seen_by_the_uploading_stage_cancels_the_job(job_runner: JobRunner, store: JobStore,
                                                              settings: Settings, storage: Storage) -> None:
    job_id = submit(store, settings, num_inference_steps=2)
    set_stage = store.set_stage

    def cancel_after_the_last_step(j: str, a: int, stage: str, progress: tuple[int, int] | None = None) -> int:
        if stage == "uploading":
            assert store.cancel(j) == "running"
        return set_stage(j, a, stage, progress)

    store.set_stage = cancel_after_the_last_step  # type: ignore[method-assign,assignment]
    assert job_runner.run(job_id) == "canceled"
    assert not storage.exists(storage.image_key(job_id, 0, "png"))
    assert not storage.exists(storage.sidecar_key(job_id))


def test_drain_past_the_grace_gives_the_job_back(store: JobStore, storage: Storage, settings: Settings) -> None:
    publish = functools.partial(enqueue, store.redis)
    runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0, publish=publish)
    job_id = submit(store, settings, num_inference_steps=10)
    on_progress(store, drain_at_step(runner, 2, grace_s=0.0))
    assert runner.run(job_id) == "released"
    job = store.get(job_id)
    assert job is not None
    assert (job.record.status, job.record.attempts, job.record.progress) == (Status.QUEUED, 1, None)
    assert queued_messages(store) == 1 and store.redis.zcard(keys.requeues()) == 0
    assert not storage.exists(storage.sidecar_key(job_id))
    assert runner.run(job_id) == "released"  # still draining: given back again, attempt 2


def test_drain_within_the_grace_lets_the_job_finish(job_runner: JobRunner, store: JobStore,
                                                    settings: Settings) -> None:
    job_id = submit(store, settings, num_inference_steps=4)
    on_progress(store, drain_at_step(job_runner, 1, grace_s=300.0))
    assert job_runner.run(job_id) == "succeeded"
