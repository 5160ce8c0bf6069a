"""Recovery without waiting for leases: a dead pool child's job handed back by its Celery parent,
a dead (or frozen) worker's job taken back once its registry record goes silent.

The module runs its own stack (redis, S3, API, workers ``a`` and ``b``) with a lease of 600 s, far
beyond every wait here: a job that comes back at all came back through the fast paths, never a
lapsed lease.  Recovery times are recorded as test properties; nothing asserts a duration
(``benchmarks/recovery.py`` measures them at the default settings).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from hotpipe.devstack import LocalStack, Proc
from hotpipe.producer.client import Client
from hotpipe.shared import keys
from hotpipe.shared.registry import Registry
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import WORKER_LOST, JobStore, StoredJob
from tests.e2e.fault_stacks import fault_stack, restart_dead
from tests.e2e.polling import wait_for as _wait_for

pytestmark = pytest.mark.e2e

#: the lease outlasts every wait: only the child hand-back and the silent-worker pass can recover
LEASE_S, MAX_ATTEMPTS, TTL_S = 600, 2, 2
ENV = {"HOTPIPE_LEASE_S": str(LEASE_S), "HOTPIPE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
       "HOTPIPE_WORKER_TTL_S": str(TTL_S), "HOTPIPE_WORKER_HEARTBEAT_S": "0.5", "HOTPIPE_REAPER_INTERVAL_S": "0.5",
       "HOTPIPE_PROGRESS_INTERVAL_S": "0", "HOTPIPE_TORCH_THREADS": "1", "HOTPIPE_ROUTING": "family",
       "HOTPIPE_PRELOAD": "tiny-sd"}
WORKERS: dict[str, dict[str, str]] = {"a": {}, "b": {}}
SLOW = {"prompt": "a slow red cube", "num_inference_steps": 120, "height": 64, "width": 64}
WAIT_S = 180.0


def wait_for(check: Callable[[], Any], what: str) -> Any:
    return _wait_for(check, what, WAIT_S)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Iterator[LocalStack]:
    with fault_stack(tmp_path_factory.mktemp("recovery"), model_root, ENV, WORKERS) as s:
        yield s


@pytest.fixture
def workers(stack: LocalStack) -> dict[str, Proc]:
    """Both workers up at the start of each test (a test may have killed one)."""
    return restart_dead(stack, WORKERS)


@pytest.fixture(scope="module")
def store(stack: LocalStack) -> JobStore:
    return JobStore(redis.Redis.from_url(stack.settings.redis_url, decode_responses=True), 60)


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[Client]:
    with Client(stack.api_url) as c:
        yield c


def submit(client: Client, seed: int) -> str:
    return client.submit({"checkpoint": "tiny-sd", "task": "text2image", "params": {**SLOW, "seed": seed}}).id


def job(store: JobStore, job_id: str) -> StoredJob:
    found = store.get(job_id)
    assert found is not None
    return found


def running(store: JobStore, job_id: str, attempt: int = 1) -> tuple[str, int]:
    """Wait until ``attempt`` is mid-denoise; (worker name, pool child pid) running it."""
    def mid_run() -> tuple[str, int] | None:
        j = job(store, job_id)
        progress = j.record.progress
        if not (j.record.status is Status.RUNNING and j.record.attempts == attempt and j.worker
                and progress is not None and 2 <= progress.step < progress.total):
            return None
        node, _, pid = j.worker.partition(" pid=")
        return node.partition("@")[0], int(pid)
    found: tuple[str, int] = wait_for(mid_run, f"job {job_id} attempt {attempt} mid-run")
    return found


def taken_back(store: JobStore, job_id: str, since: float, record_property: Callable[[str, object], None]) -> None:
    """Wait until attempt 1 no longer holds the job; record how long after the kill that was."""
    wait_for(lambda: (rec := job(store, job_id).record).status is not Status.RUNNING or rec.attempts > 1,
             f"job {job_id} taken back from attempt 1")
    record_property("recovery_s", round(time.monotonic() - since, 2))


def finished(store: JobStore, job_id: str) -> StoredJob:
    return wait_for(lambda: (j := job(store, job_id)).record.status.is_terminal() and j, f"job {job_id} terminal")


def log_of(proc: Proc) -> str:
    return proc.log_path.read_text(errors="replace")


def puts(storage: Storage, key: str) -> int:
    """How many times ``key`` was put (object versions; the bucket has versioning on)."""
    listing = storage.client.list_object_versions(Bucket=storage.bucket, Prefix=key)
    return sum(1 for v in listing.get("Versions", []) if v["Key"] == key)


def other(name: str) -> str:
    return "b" if name == "a" else "a"


def test_a_dead_pool_childs_job_is_handed_back_by_its_parent_at_once(
        workers: dict[str, Proc], store: JobStore, client: Client, stack: LocalStack,
        record_property: Callable[[str, object], None]) -> None:
    job_id = submit(client, seed=1)
    victim, child = running(store, job_id)
    os.kill(child, signal.SIGKILL)  # the pool child only (OOM killer, segfault); the parent sees it die
    taken_back(store, job_id, time.monotonic(), record_property)

    done = finished(store, job_id)
    assert (done.record.status, done.record.attempts) == (Status.SUCCEEDED, 2), done.record.error
    handed_back = f"job {job_id}: pool child {victim}@"
    assert handed_back in log_of(workers[victim]) and "its attempt was taken back (queued)" in log_of(workers[victim])
    storage = stack.storage()
    assert puts(storage, storage.image_key(job_id, 0, "png")) == 1


def test_a_job_whose_child_dies_on_every_attempt_ends_worker_lost_at_the_cap(
        workers: dict[str, Proc], store: JobStore, client: Client, stack: LocalStack) -> None:
    job_id = submit(client, seed=2)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        _, child = running(store, job_id, attempt)
        os.kill(child, signal.SIGKILL)

    done = finished(store, job_id)
    assert (done.record.status, done.record.attempts) == (Status.FAILED, MAX_ATTEMPTS)
    assert done.record.error is not None and done.record.error.code == WORKER_LOST
    storage = stack.storage()
    assert done.record.result is None and puts(storage, storage.image_key(job_id, 0, "png")) == 0


def test_a_killed_workers_job_is_taken_back_once_its_registry_record_goes_silent(
        workers: dict[str, Proc], store: JobStore, client: Client, stack: LocalStack,
        record_property: Callable[[str, object], None]) -> None:
    job_id = submit(client, seed=3)
    victim, _ = running(store, job_id)
    workers[victim].kill_group()  # the whole worker, parent included: node loss, kill -9 of the pod
    taken_back(store, job_id, time.monotonic(), record_property)

    done = finished(store, job_id)
    assert (done.record.status, done.record.attempts) == (Status.SUCCEEDED, 2), done.record.error
    assert (done.worker or "").startswith(f"{other(victim)}@")
    assert f"reaper: job {job_id}: its worker stopped renewing" in log_of(workers[other(victim)])


def test_a_worker_frozen_past_the_silence_window_wakes_up_and_stands_down(
        workers: dict[str, Proc], store: JobStore, client: Client, stack: LocalStack) -> None:
    job_id = submit(client, seed=4)
    frozen, _ = running(store, job_id)
    workers[frozen].kill_group(signal.SIGSTOP)  # parent and child paused (a long GC, a stopped VM)
    try:
        done = finished(store, job_id)  # declared dead after TTL_S of silence; the other worker reruns it
        before = store.redis.hgetall(keys.job(job_id))
    finally:
        workers[frozen].kill_group(signal.SIGCONT)
    stood_down = f"job {job_id}: attempt 1 no longer owns the job; standing down"
    wait_for(lambda: stood_down in log_of(workers[frozen]), stood_down)

    assert (done.record.status, done.record.attempts) == (Status.SUCCEEDED, 2), done.record.error
    assert store.redis.hgetall(keys.job(job_id)) == before  # exactly one visible result: attempt 2's
    storage = stack.storage()
    assert puts(storage, storage.image_key(job_id, 0, "png")) == 1
    assert json.loads(storage.get(storage.sidecar_key(job_id)))["provenance"]["attempt"] == 2
    registry = Registry(store.redis, TTL_S)  # and the paused worker is alive again
    wait_for(lambda: any(w.name.startswith(f"{frozen}@") for w in registry.live()), f"{frozen} live again")


def test_a_silence_window_not_longer_than_the_heartbeat_is_refused_at_start(stack: LocalStack) -> None:
    env = {**os.environ, **stack.env(), "HOTPIPE_WORKER_TTL_S": "1", "HOTPIPE_WORKER_HEARTBEAT_S": "2"}
    proc = subprocess.run([sys.executable, "-m", "hotpipe", "worker", "--family", "stable-diffusion"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "HOTPIPE_WORKER_TTL_S" in proc.stderr and "HOTPIPE_WORKER_HEARTBEAT_S" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, no traceback
