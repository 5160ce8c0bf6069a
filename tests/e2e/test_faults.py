"""Faults injected into real processes: workers SIGKILLed, frozen, SIGTERMed; messages duplicated.

The module runs its own stack (redis, S3, API, two workers ``a`` and ``b``) with short
recovery settings, so killing workers never disturbs the session's stack.  The bucket
has versioning on: every put of a key adds a version, so "written once" is counted, not
assumed.  Kombu's visibility timeout stays at its default (an hour), so every recovery
seen here is hotpipe's (a dead pool child's parent handing its attempt back, a silent worker's
or a lapsed lease's reaper), never a redelivery; ``tests/e2e/test_recovery.py`` checks the
fast paths alone, with a lease no wait outlasts.  Waits are generous; nothing
asserts a duration (recovery times are recorded as test properties).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from hotpipe.devstack import LocalStack, Proc
from hotpipe.producer.client import Client
from hotpipe.shared import keys
from hotpipe.shared.messages import enqueue
from hotpipe.shared.queues import family_lists, family_queue
from hotpipe.shared.registry import message_job_id
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import WORKER_LOST, JobStore, StoredJob
from tests.e2e.fault_stacks import fault_stack, restart_dead
from tests.e2e.polling import wait_for as _wait_for

pytestmark = pytest.mark.e2e

LEASE_S, REAPER_INTERVAL_S, MAX_ATTEMPTS = 3, 1, 2
FAULT_ENV = {"HOTPIPE_LEASE_S": str(LEASE_S), "HOTPIPE_REAPER_INTERVAL_S": str(REAPER_INTERVAL_S),
             "HOTPIPE_MAX_ATTEMPTS": str(MAX_ATTEMPTS), "HOTPIPE_PROGRESS_INTERVAL_S": "0",
             "HOTPIPE_TORCH_THREADS": "1",  # two workers side by side: don't oversubscribe the cores
             # jobs spread over both workers through the family queue (affinity routing would send
             # every tiny-sd job to the one worker holding it; tests/e2e/test_workers.py covers that)
             "HOTPIPE_ROUTING": "family",
             # warm when ready: a cold worker's first job starts late enough to miss the other's
             "HOTPIPE_PRELOAD": "tiny-sd",
             # a job queued this long with nothing waiting for its family gets its message again
             "HOTPIPE_STALE_QUEUED_S": "3"}
#: on SIGTERM, ``a`` lets its job finish (long grace) and ``b`` gives its job back at once
WORKERS = {"a": {"HOTPIPE_SHUTDOWN_GRACE_S": "300"}, "b": {"HOTPIPE_SHUTDOWN_GRACE_S": "0"}}
FAMILY = "stable-diffusion"
#: long enough to be caught mid-denoise on both workers at once (seconds on an idle CPU; 40 steps
#: took ~1 s in a quiet CI run, too short to overlap), small enough to rerun
SLOW = {"prompt": "a slow red cube", "num_inference_steps": 120, "height": 64, "width": 64}
WAIT_S = 240.0


def wait_for(check: Callable[[], Any], what: str) -> Any:
    return _wait_for(check, what, WAIT_S)


@pytest.fixture(scope="module", name="fault_stack")
def the_fault_stack(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Iterator[LocalStack]:
    with fault_stack(tmp_path_factory.mktemp("faults"), model_root, FAULT_ENV, WORKERS) as stack:
        yield stack


@pytest.fixture
def workers(fault_stack: LocalStack) -> dict[str, Proc]:
    """Both workers up and idle at the start of each test (a test may have killed one)."""
    return restart_dead(fault_stack, WORKERS)


@pytest.fixture(scope="module")
def store(fault_stack: LocalStack) -> JobStore:
    return JobStore(redis.Redis.from_url(fault_stack.settings.redis_url, decode_responses=True), 60)


@pytest.fixture(scope="module")
def client(fault_stack: LocalStack) -> Iterator[Client]:
    with Client(fault_stack.api_url) as c:
        yield c


@pytest.fixture(scope="module")
def storage(fault_stack: LocalStack) -> Storage:
    return fault_stack.storage()


def submit(client: Client, seed: int, **params: Any) -> str:
    return client.submit({"checkpoint": "tiny-sd", "task": "text2image",
                          "params": {**SLOW, "seed": seed, **params}}).id


def job(store: JobStore, job_id: str) -> StoredJob:
    found = store.get(job_id)
    assert found is not None
    return found


def mid_run(store: JobStore, job_id: str, attempt: int = 1) -> tuple[str, int] | None:
    """(worker name, pool child pid) while ``attempt`` of the job is mid-denoise, else None."""
    j = job(store, job_id)
    progress = j.record.progress
    if not (j.record.status is Status.RUNNING and j.record.attempts == attempt and j.worker
            and progress is not None and 2 <= progress.step < progress.total):
        return None
    node, _, pid = j.worker.partition(" pid=")
    return node.partition("@")[0], int(pid)


def running(store: JobStore, job_id: str, attempt: int = 1) -> tuple[str, int]:
    """Wait until ``attempt`` of the job is mid-denoise; (worker name, pool child pid) running it."""
    found: tuple[str, int] = wait_for(lambda: mid_run(store, job_id, attempt), f"job {job_id} attempt {attempt}")
    return found


def finished(store: JobStore, job_id: str) -> StoredJob:
    return wait_for(lambda: (j := job(store, job_id)).record.status.is_terminal() and j,
                    f"job {job_id} terminal")


def taken_back(store: JobStore, job_id: str, since: float, record_property: Callable[[str, object], None]) -> None:
    """Wait until attempt 1 no longer holds the job (requeued, or already claimed again).

    Records how long after ``since`` (the kill, monotonic clock) that happened.
    """
    def moved_on() -> bool:
        rec = job(store, job_id).record
        return rec.status is not Status.RUNNING or rec.attempts > 1

    wait_for(moved_on, f"job {job_id} taken back from attempt 1")
    took = round(time.monotonic() - since, 2)
    record_property("recovery_s", took)
    print(f"recovery: job {job_id} taken back {took}s after the kill "
          f"(lease {LEASE_S}s, reaper every {REAPER_INTERVAL_S}s)")


def puts(storage: Storage, key: str) -> int:
    """How many times ``key`` was put (object versions; the bucket has versioning on)."""
    listing = storage.client.list_object_versions(Bucket=storage.bucket, Prefix=key)
    return sum(1 for v in listing.get("Versions", []) if v["Key"] == key)


def waiting(store: JobStore) -> int:
    """Messages waiting on the family's queue: every priority list of it (kombu's "{queue}\x06\x16{p}")."""
    queue = family_queue(FAMILY)
    return sum(int(store.redis.llen(name)) for name in [queue, *(f"{queue}\x06\x16{p}" for p in range(1, 10))])


def image_key(storage: Storage, job_id: str) -> str:
    return storage.image_key(job_id, 0, "png")


def other(name: str) -> str:
    return "b" if name == "a" else "a"


def test_sigkill_worker_group_mid_job_reruns_once_on_the_other_worker(
        workers: dict[str, Proc], store: JobStore, client: Client, storage: Storage,
        record_property: Callable[[str, object], None]) -> None:
    job_id = submit(client, seed=1)
    victim, _ = running(store, job_id)
    workers[victim].kill_group()
    taken_back(store, job_id, time.monotonic(), record_property)

    done = finished(store, job_id)
    assert done.record.status is Status.SUCCEEDED, done.record.error
    assert done.record.attempts == 2 and (done.worker or "").startswith(f"{other(victim)}@")
    assert puts(storage, image_key(storage, job_id)) == 1  # the killed attempt never uploaded
    sidecar = json.loads(storage.get(storage.sidecar_key(job_id)))
    assert sidecar["provenance"]["attempt"] == 2


def test_workers_lost_on_every_attempt_end_failed_worker_lost(
        workers: dict[str, Proc], store: JobStore, client: Client, storage: Storage) -> None:
    job_id = submit(client, seed=2)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        _, child = running(store, job_id, attempt)
        os.kill(child, signal.SIGKILL)  # the pool child only, as the OOM killer would

    done = finished(store, job_id)
    assert done.record.status is Status.FAILED and done.record.attempts == MAX_ATTEMPTS
    assert done.record.error is not None and done.record.error.code == WORKER_LOST
    assert done.record.result is None and puts(storage, image_key(storage, job_id)) == 0


def test_frozen_attempt_that_wakes_up_late_writes_nothing(
        workers: dict[str, Proc], store: JobStore, client: Client, storage: Storage) -> None:
    job_id = submit(client, seed=3)
    frozen, child = running(store, job_id)
    os.kill(child, signal.SIGSTOP)  # alive but silent: its lease lapses, another attempt runs
    try:
        done = finished(store, job_id)
        before = store.redis.hgetall(keys.job(job_id))
    finally:
        os.kill(child, signal.SIGCONT)
    stood_down = f"job {job_id}: attempt 1 no longer owns the job; standing down"
    wait_for(lambda: stood_down in workers[frozen].log_path.read_text(errors="replace"), stood_down)

    assert done.record.status is Status.SUCCEEDED and done.record.attempts == 2, done.record.error
    assert store.redis.hgetall(keys.job(job_id)) == before
    assert puts(storage, image_key(storage, job_id)) == 1
    sidecar = json.loads(storage.get(storage.sidecar_key(job_id)))  # still there: not deleted by attempt 1
    assert sidecar["provenance"]["attempt"] == 2


def test_duplicate_delivery_runs_the_job_once(
        workers: dict[str, Proc], store: JobStore, client: Client, storage: Storage,
        fault_stack: LocalStack) -> None:
    job_id = submit(client, seed=4, num_inference_steps=20)
    enqueue(redis.Redis.from_url(fault_stack.settings.redis_url), job_id, FAMILY)  # the same message, again

    done = finished(store, job_id)
    stood_down = f"job {job_id} not claimable"
    wait_for(lambda: any(stood_down in p.log_path.read_text(errors="replace") for p in workers.values()),
             stood_down)
    assert done.record.status is Status.SUCCEEDED and done.record.attempts == 1, done.record.error
    assert waiting(store) == 0  # both deliveries consumed
    assert puts(storage, image_key(storage, job_id)) == 1
    assert puts(storage, storage.sidecar_key(job_id)) == 1


def test_a_message_lost_in_a_frozen_consumers_socket_is_sent_again(
        workers: dict[str, Proc], store: JobStore, client: Client, storage: Storage,
        fault_stack: LocalStack) -> None:
    """A consumer blocked in BRPOP that froze: Redis pops the next message into its socket and it
    never reads it, then dies.  Played by a raw connection that BRPOPs the family's lists and is
    closed unread; no lease or outbox knows the job, only the sweep does."""
    frozen = redis.Redis.from_url(fault_stack.settings.redis_url).connection_pool.get_connection()
    frozen.send_command("BRPOP", *family_lists(FAMILY), 0)  # block until a message comes, forever
    time.sleep(2.5)  # the workers' own BRPOPs (1 s timeouts) re-block behind this one: it is served first
    job_id = submit(client, seed=6, num_inference_steps=2)
    popped = frozen.read_response()  # [list, message]: it was this job's, and it is out of Redis now
    assert message_job_id(popped[1].decode()) == job_id
    frozen.disconnect()
    assert waiting(store) == 0 and job(store, job_id).record.status is Status.QUEUED

    done = finished(store, job_id)  # a reaper's sweep finds it queued with nothing waiting, and re-sends it
    assert done.record.status is Status.SUCCEEDED and done.record.attempts == 1, done.record.error
    assert any(f"reaper: job {job_id}: queued for long" in p.log_path.read_text(errors="replace")
               for p in workers.values())
    assert puts(storage, image_key(storage, job_id)) == 1


def one_job_each(store: JobStore, client: Client, seed: int) -> dict[str, str]:
    """A slow job running on each worker, both mid-denoise at once: worker name -> job id."""
    ids = [submit(client, seed=seed), submit(client, seed=seed + 1)]

    def both_mid_run() -> dict[str, str] | None:
        where = [mid_run(store, job_id) for job_id in ids]
        return {w[0]: job_id for w, job_id in zip(where, ids, strict=True) if w} if all(where) else None

    on: dict[str, str] = wait_for(both_mid_run, f"jobs {ids} both mid-run")
    assert sorted(on) == ["a", "b"]
    return on


def test_sigterm_finishes_the_job_within_the_grace_or_gives_it_back(
        workers: dict[str, Proc], store: JobStore, client: Client, storage: Storage,
        fault_stack: LocalStack) -> None:
    on = one_job_each(store, client, seed=5)
    for name in ("a", "b"):
        workers[name].send(signal.SIGTERM)  # to the main process only, as Kubernetes does
    assert [workers[name].popen.wait(WAIT_S) for name in ("a", "b")] == [0, 0]

    kept, given_back = job(store, on["a"]), job(store, on["b"])
    assert (kept.record.status, kept.record.attempts) == (Status.SUCCEEDED, 1)
    assert (given_back.record.status, given_back.record.attempts) == (Status.QUEUED, 1)
    assert given_back.record.progress is None
    fault_stack.start_workers(WORKERS)
    done = finished(store, on["b"])
    assert (done.record.status, done.record.attempts) == (Status.SUCCEEDED, 2), done.record.error
    assert [puts(storage, image_key(storage, job_id)) for job_id in (on["a"], on["b"])] == [1, 1]


def test_sigterm_then_sigkill_is_recovered_by_the_reaper(
        workers: dict[str, Proc], store: JobStore, client: Client, storage: Storage,
        record_property: Callable[[str, object], None]) -> None:
    on = one_job_each(store, client, seed=7)
    workers["a"].send(signal.SIGTERM)  # warm shutdown waits for the job (grace 300 s) ...
    wait_for(lambda: "Warm shutdown" in workers["a"].log_path.read_text(errors="replace"), "warm shutdown")
    workers["a"].kill_group()  # ... but the pod's grace period ends first
    taken_back(store, on["a"], time.monotonic(), record_property)

    done = finished(store, on["a"])
    assert (done.record.status, done.record.attempts) == (Status.SUCCEEDED, 2), done.record.error
    assert (done.worker or "").startswith("b@")
    assert finished(store, on["b"]).record.status is Status.SUCCEEDED
    assert puts(storage, image_key(storage, on["a"])) == 1
