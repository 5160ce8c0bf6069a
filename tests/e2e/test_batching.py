"""Dynamic batching through the API with a real worker (``HOTPIPE_MAX_BATCH=4``): jobs queued before the
worker starts run in one pipeline call, each keeping its own record, cancel and recovery.

The module runs its own stack (versioned S3, so every put is counted) with a lease of 600 s: a job
that comes back after a crash came back through the parent's hand-back of the dead child's
attempts, never a lapsed lease.  Nothing here asserts a duration.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image

from hotpipe.devstack import LocalStack
from hotpipe.producer.client import Client
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore, StoredJob
from tests.e2e.fault_stacks import fault_stack
from tests.e2e.polling import wait_for as _wait_for

pytestmark = pytest.mark.e2e

ENV = {"HOTPIPE_MAX_BATCH": "4", "HOTPIPE_LEASE_S": "600", "HOTPIPE_PROGRESS_INTERVAL_S": "0",
       "HOTPIPE_TORCH_THREADS": "1", "HOTPIPE_ROUTING": "family", "HOTPIPE_PRELOAD": "tiny-sd",
       "HOTPIPE_WORKER_HEARTBEAT_S": "0.5", "HOTPIPE_WORKER_TTL_S": "3", "HOTPIPE_REAPER_INTERVAL_S": "0.5"}
FAST = {"num_inference_steps": 4, "height": 64, "width": 64}
SLOW = {"num_inference_steps": 150, "height": 64, "width": 64}
WAIT_S = 240.0
#: the one worker, started by each test once its jobs are queued
WORKER = "w"


def wait_for(check: Callable[[], Any], what: str) -> Any:
    return _wait_for(check, what, WAIT_S)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Iterator[LocalStack]:
    with fault_stack(tmp_path_factory.mktemp("batching"), model_root, ENV, {}) as s:
        yield s


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[Client]:
    with Client(stack.api_url) as c:
        yield c


@pytest.fixture(scope="module")
def store(stack: LocalStack) -> JobStore:
    return JobStore(redis.Redis.from_url(stack.settings.redis_url, decode_responses=True), 60)


@pytest.fixture
def no_worker(stack: LocalStack) -> Iterator[None]:
    """No worker runs when the test starts (jobs queue up); the one the test starts is stopped after it."""
    def stop() -> None:
        if WORKER in stack.procs:
            stack.procs[WORKER].stop()
    stop()
    yield
    stop()


def submit(client: Client, prompt: str, seed: int, params: dict[str, Any]) -> str:
    body = {"checkpoint": "tiny-sd", "task": "text2image", "params": {**params, "prompt": prompt, "seed": seed}}
    return client.submit(body).id


def finished(store: JobStore, job_id: str) -> StoredJob:
    def done() -> StoredJob | None:
        found = store.get(job_id)
        return found if found is not None and found.record.status.is_terminal() else None
    found: StoredJob = wait_for(done, f"job {job_id} terminal")
    return found


def pixels(storage: Storage, store: JobStore, job_id: str) -> list[np.ndarray]:
    record = finished(store, job_id).record
    assert record.status is Status.SUCCEEDED and record.result is not None, record.error
    return [np.asarray(Image.open(io.BytesIO(storage.get(i.key))).convert("RGB"), dtype=np.int16)
            for i in record.result.images]


def batch_of(storage: Storage, job_id: str) -> dict[str, int] | None:
    """The batch the job's sidecar says its call was (None: it ran alone)."""
    batch: dict[str, int] | None = json.loads(storage.get(storage.sidecar_key(job_id)))["provenance"].get("batch")
    return batch


def puts(storage: Storage, key: str) -> int:
    listing = storage.client.list_object_versions(Bucket=storage.bucket, Prefix=key)
    return sum(1 for v in listing.get("Versions", []) if v["Key"] == key)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_queued_jobs_run_as_one_batch_and_match_each_job_alone(
        size: int, no_worker: None, stack: LocalStack, client: Client, store: JobStore,
        record_property: Callable[[str, object], None]) -> None:
    jobs = [(f"a lighthouse number {i}", 10 + i) for i in range(size)]
    batched = [submit(client, p, s, FAST) for p, s in jobs]
    stack.start_worker(WORKER)
    storage = stack.storage()
    for job_id in batched:
        assert finished(store, job_id).record.status is Status.SUCCEEDED
        assert batch_of(storage, job_id) == (None if size == 1 else {"jobs": size, "images": size})

    worst = 0
    for job_id, (prompt, seed) in zip(batched, jobs, strict=True):
        alone = submit(client, prompt, seed, FAST)  # nothing else queued: it runs alone
        finished(store, alone)
        assert batch_of(storage, alone) is None
        for a, b in zip(pixels(storage, store, job_id), pixels(storage, store, alone), strict=True):
            worst = max(worst, int(np.abs(a - b).max()))
    record_property("largest_difference_levels", worst)
    print(f"batch of {size}: largest difference against each job alone: {worst} levels of 255")
    assert worst <= 2


def all_running(store: JobStore, ids: list[str]) -> str | None:
    """The pool child running every job of ``ids`` mid-denoise in one batch, once it does."""
    found = [store.get(j) for j in ids]
    if not all(f is not None and f.record.status is Status.RUNNING and f.record.progress is not None
               and 2 <= f.record.progress.step < f.record.progress.total for f in found):
        return None
    workers = {f.worker for f in found if f is not None}
    return workers.pop() if len(workers) == 1 else None


def test_canceling_one_job_of_a_batch_discards_only_its_image(
        no_worker: None, stack: LocalStack, client: Client, store: JobStore) -> None:
    ids = [submit(client, f"a slow cube {i}", i, SLOW) for i in range(4)]
    stack.start_worker(WORKER)
    wait_for(lambda: all_running(store, ids), "the four jobs running in one batch")
    shown = wait_for(lambda: [w for w in client.workers() if len(w.get("batch", [])) == 4], "the batch listed")
    assert sorted(shown[0]["batch"]) == sorted(ids)  # GET /v1/workers shows the batch's job ids

    assert client.cancel(ids[1]).cancel_requested
    ends = [finished(store, j).record for j in ids]
    assert [r.status for r in ends] == [Status.SUCCEEDED, Status.CANCELED, Status.SUCCEEDED, Status.SUCCEEDED]
    storage = stack.storage()
    assert not storage.exists(storage.image_key(ids[1], 0, "png"))
    assert not storage.exists(storage.sidecar_key(ids[1]))
    assert all(batch_of(storage, j) == {"jobs": 4, "images": 4} for j in (ids[0], ids[2], ids[3]))


def test_a_crash_mid_batch_requeues_every_job_and_each_ends_once(
        no_worker: None, stack: LocalStack, client: Client, store: JobStore) -> None:
    ids = [submit(client, f"a slow sphere {i}", 100 + i, SLOW) for i in range(4)]
    stack.start_worker(WORKER)
    child = wait_for(lambda: all_running(store, ids), "the four jobs running in one batch")
    os.kill(int(child.partition(" pid=")[2]), signal.SIGKILL)  # the pool child: OOM killer, segfault

    ends = [finished(store, j) for j in ids]
    assert [(e.record.status, e.record.attempts) for e in ends] == [(Status.SUCCEEDED, 2)] * 4
    assert all(e.worker != child for e in ends)
    storage = stack.storage()
    for job_id in ids:  # exactly one visible result each: one put of its image, by attempt 2
        assert puts(storage, storage.image_key(job_id, 0, "png")) == 1
        assert json.loads(storage.get(storage.sidecar_key(job_id)))["provenance"]["attempt"] == 2


@pytest.mark.parametrize("value", ["0", "2.5", "65"])
def test_a_bad_max_batch_is_refused_at_worker_start(value: str, stack: LocalStack) -> None:
    env = {**os.environ, **stack.env(), "HOTPIPE_MAX_BATCH": value}
    proc = subprocess.run([sys.executable, "-m", "hotpipe", "worker", "--family", "stable-diffusion"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "HOTPIPE_MAX_BATCH" in proc.stderr and "from 1 (no batching) to 64, or auto" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, no traceback
