"""Outages of what hotpipe depends on: Redis restarts (with AOF), S3 answering 503.

The module runs its own stack: a redis-server with the append-only file on (what an
operator must configure) on a fixed port and folder so it can be killed and started
again, S3 (moto), the API, and one worker whose S3 endpoint is a proxy that injects
503s (``faulty_s3.py``: a real HTTP server, so boto3's own retries and backoff meet real
HTTP errors).  The bucket has versioning on, so writes are counted, not assumed.
Nothing asserts a duration; every wait is bounded.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from hotpipe.devstack import LocalStack, Proc, find_redis_server, free_port, start_redis
from hotpipe.producer.client import Client
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore, StoredJob
from tests.e2e.faulty_s3 import FaultyS3
from tests.e2e.polling import wait_for as _wait_for

pytestmark = pytest.mark.e2e

WAIT_S = 240.0
OUTAGE_ENV = {"HOTPIPE_LEASE_S": "5", "HOTPIPE_REAPER_INTERVAL_S": "1", "HOTPIPE_PROGRESS_INTERVAL_S": "0"}
#: the worker's S3 client: four tries per request, so three injected 503s in a row are survived
S3_MAX_ATTEMPTS = 4
#: how long Redis stays down: past redis-py's reconnect retries, so the worker really meets the outage
OUTAGE_S = 4.0
SLOW = {"prompt": "a slow red cube", "num_inference_steps": 40, "height": 64, "width": 64}
QUICK = {"prompt": "a quick blue cube", "num_inference_steps": 2, "height": 32, "width": 32}


def wait_for(check: Callable[[], Any], what: str) -> Any:
    return _wait_for(check, what, WAIT_S)


class RestartableRedis:
    """A redis-server with AOF on one port and folder, killed and started again by tests."""

    def __init__(self, workdir: Path):
        self.workdir, self.port, self.binary = workdir, free_port(), find_redis_server("system")
        self.proc: Proc | None = None
        self.url = ""

    def start(self) -> None:
        self.proc, self.url = start_redis(self.workdir, self.binary, port=self.port, aof=True)

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the AOF already holds comes back."""
        assert self.proc is not None
        self.proc.kill_group(signal.SIGKILL)
        self.proc.popen.wait()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture(scope="module")
def restartable_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path_factory.mktemp("aof-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory: pytest.TempPathFactory, model_root: Path,
                 restartable_redis: RestartableRedis) -> Iterator[tuple[LocalStack, FaultyS3]]:
    with LocalStack(tmp_path_factory.mktemp("outages"), model_root, redis_url=restartable_redis.url,
                    workers=0, extra_env=OUTAGE_ENV) as stack:
        storage = stack.storage()
        storage.client.put_bucket_versioning(Bucket=storage.bucket, VersioningConfiguration={"Status": "Enabled"})
        proxy = FaultyS3(stack.settings.s3_endpoint_url or "").start()
        try:
            stack.start_worker("w", {"HOTPIPE_S3_ENDPOINT_URL": proxy.url,
                                     "HOTPIPE_S3_MAX_ATTEMPTS": str(S3_MAX_ATTEMPTS)})
            yield stack, proxy
        finally:
            proxy.stop()


@pytest.fixture(scope="module")
def stack(outage_stack: tuple[LocalStack, FaultyS3]) -> LocalStack:
    return outage_stack[0]


@pytest.fixture
def proxy(outage_stack: tuple[LocalStack, FaultyS3]) -> Iterator[FaultyS3]:
    outage_stack[1].up()
    yield outage_stack[1]
    outage_stack[1].up()


@pytest.fixture(scope="module")
def store(stack: LocalStack) -> JobStore:
    return JobStore(redis.Redis.from_url(stack.settings.redis_url, decode_responses=True), 60)


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[Client]:
    with Client(stack.api_url) as c:
        yield c


@pytest.fixture(scope="module")
def storage(stack: LocalStack) -> Storage:
    return stack.storage()


def submit(client: Client, seed: int, params: dict[str, Any]) -> str:
    return client.submit({"checkpoint": "tiny-sd", "task": "text2image", "params": {**params, "seed": seed}}).id


def record(store: JobStore, job_id: str) -> StoredJob | None:
    try:
        return store.get(job_id)
    except redis.ConnectionError:
        return None


def finished(store: JobStore, job_id: str) -> StoredJob:
    return wait_for(lambda: (j := record(store, job_id)) is not None and j.record.status.is_terminal() and j,
                    f"job {job_id} terminal")


def versions(storage: Storage, job_id: str) -> dict[str, int]:
    """Key -> how many times it was put, for every object under the job's prefix but its inputs."""
    prefix = storage.job_prefix(job_id) + "/"
    listing = storage.client.list_object_versions(Bucket=storage.bucket, Prefix=prefix)
    out: dict[str, int] = {}
    for v in listing.get("Versions", []):
        if "/inputs/" not in v["Key"]:
            out[v["Key"]] = out.get(v["Key"], 0) + 1
    return out


def expected_keys(storage: Storage, job_id: str) -> set[str]:
    return {storage.image_key(job_id, 0, "png"), storage.sidecar_key(job_id)}


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"]["code"] == "unavailable"


# -- Redis ---------------------------------------------------------------------------------

def test_redis_restart_loses_no_accepted_job_and_everyone_reconnects(
        stack: LocalStack, restartable_redis: RestartableRedis, store: JobStore, client: Client,
        storage: Storage) -> None:
    running = submit(client, 1, SLOW)
    waiting = [submit(client, seed, QUICK) for seed in (2, 3)]

    def mid_run() -> bool:
        j = record(store, running)
        return bool(j and j.record.status is Status.RUNNING and j.record.progress and j.record.progress.step >= 2)

    wait_for(mid_run, f"job {running} mid-run")
    restartable_redis.kill()
    try:
        with httpx.Client(base_url=stack.api_url, timeout=30) as http:
            body = {"checkpoint": "tiny-sd", "task": "text2image", "params": QUICK}
            assert_unavailable(http.post("/v1/jobs", json=body))
            assert_unavailable(http.get(f"/v1/jobs/{waiting[0]}"))
            assert_unavailable(http.post(f"/v1/jobs/{waiting[0]}/cancel"))
            assert_unavailable(http.get("/readyz"))
            assert http.get("/healthz").status_code == 200
        time.sleep(OUTAGE_S)  # the fault's length (longer than redis-py's own reconnect retries)
    finally:
        restartable_redis.start()

    wait_for(lambda: httpx.get(stack.api_url + "/readyz", timeout=5).status_code == 200, "API ready again")
    after = submit(client, 4, QUICK)  # the API's connections and the broker's came back by themselves
    for job_id in [running, *waiting, after]:
        done = finished(store, job_id)
        assert done.record.status is Status.SUCCEEDED, (job_id, done.record.error)
        assert versions(storage, job_id) == dict.fromkeys(expected_keys(storage, job_id), 1)


# -- S3 ------------------------------------------------------------------------------------

def test_s3_503s_are_retried_and_the_job_succeeds(proxy: FaultyS3, store: JobStore, client: Client,
                                                   storage: Storage) -> None:
    proxy.refuse(S3_MAX_ATTEMPTS - 1)
    job_id = submit(client, 10, QUICK)

    done = finished(store, job_id)

    assert done.record.status is Status.SUCCEEDED, done.record.error
    assert proxy.count("refuse") >= S3_MAX_ATTEMPTS - 1
    assert done.record.result is not None
    assert {im.key for im in done.record.result.images} | {done.record.result.sidecar_key} == \
        expected_keys(storage, job_id)
    assert all(storage.exists(key) for key in expected_keys(storage, job_id))


def test_a_retried_put_overwrites_the_same_key(proxy: FaultyS3, store: JobStore, client: Client,
                                                storage: Storage) -> None:
    """The object lands but its answer is lost: the retry writes the same key, never a new one."""
    before = proxy.count("lose")
    proxy.lose_answer(1)
    job_id = submit(client, 11, QUICK)

    done = finished(store, job_id)

    assert done.record.status is Status.SUCCEEDED, done.record.error
    assert proxy.count("lose") == before + 1
    written = versions(storage, job_id)
    assert set(written) == expected_keys(storage, job_id)
    assert sorted(written.values()) == [1, 2]  # one key put twice (the retry), nothing beside it


def test_s3_outage_past_the_retries_fails_the_job_never_succeeds(proxy: FaultyS3, store: JobStore,
                                                                 client: Client, storage: Storage) -> None:
    proxy.down()
    job_id = submit(client, 12, QUICK)

    done = finished(store, job_id)
    proxy.up()

    assert done.record.status is Status.FAILED
    assert done.record.error is not None and done.record.error.code == "storage_error", done.record.error
    assert done.record.result is None
    assert versions(storage, job_id) == {}
    healthy = finished(store, submit(client, 13, QUICK))  # the worker goes on once S3 is back
    assert healthy.record.status is Status.SUCCEEDED, healthy.record.error


# -- time limit ----------------------------------------------------------------------------

def test_a_job_past_the_time_limit_fails_and_the_pool_child_is_replaced(
        stack: LocalStack, proxy: FaultyS3, store: JobStore, client: Client, storage: Storage) -> None:
    """The limit is enforced by the child's heartbeat thread, which runs on while the job's
    thread is deep in torch (native code, GIL released) — the case a lease can't catch."""
    stack.procs["w"].stop()
    stack.start_worker("limited", {"HOTPIPE_S3_ENDPOINT_URL": proxy.url, "HOTPIPE_JOB_TIME_LIMIT_S": "3"})
    try:
        endless = submit(client, 20, {**SLOW, "num_inference_steps": 150, "height": 256, "width": 256})
        done = finished(store, endless)
        after = finished(store, submit(client, 21, QUICK))
    finally:
        stack.procs["limited"].stop()
        stack.start_worker("w", {"HOTPIPE_S3_ENDPOINT_URL": proxy.url,
                                 "HOTPIPE_S3_MAX_ATTEMPTS": str(S3_MAX_ATTEMPTS)})

    assert done.record.status is Status.FAILED and done.record.attempts == 1
    assert done.record.error is not None and done.record.error.code == "time_limit", done.record.error
    assert not any(storage.exists(key) for key in expected_keys(storage, endless))  # no half a result
    assert after.record.status is Status.SUCCEEDED, after.record.error
    assert after.worker and done.worker and after.worker != done.worker  # a fresh pool child ran it
    assert (after.worker or "").startswith("limited@")
