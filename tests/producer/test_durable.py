"""A submit that waits for replicas (HOTPIPE_REDIS_SUBMIT_REPLICAS): 202 only once a replica holds the
job; otherwise a 503 naming it, the job kept for an Idempotency-Key retry or canceled without one.

The replica is stopped (SIGSTOP) to make it miss the WAIT: a WAIT sent on any other connection
than the create's would count no write of its own and pass at once, so these tests catch it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from hotpipe.producer.durable import NotReplicated, record_job
from hotpipe.shared import keys
from hotpipe.shared.connections import sync_client
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.settings import Settings
from hotpipe.shared.status import Status
from hotpipe.shared.store import JobOptions, JobStore
from tests.jobs import job_spec
from tests.sentinels import SentinelGroup

BODY = {"checkpoint": "tiny-sd", "task": "text2image",
        "params": {"prompt": "a boat", "num_inference_steps": 2, "height": 64, "width": 64}}


@pytest.fixture
def durable(sentinel_group: SentinelGroup) -> Settings:
    return Settings.from_env({**sentinel_group.env(), "HOTPIPE_REDIS_SUBMIT_REPLICAS": "1",
                              "HOTPIPE_REDIS_SUBMIT_WAIT_MS": "200"})


@pytest.fixture
def store(durable: Settings) -> Iterator[JobStore]:
    client = sync_client(durable, decode_responses=True)
    yield JobStore(client, 600)
    client.close()


@contextmanager
def replica_stopped(group: SentinelGroup) -> Iterator[None]:
    """The replica frozen (it acknowledges nothing) for the block; the sentinel's down-after is longer."""
    group.procs["replica0"].kill_group(signal.SIGSTOP)
    try:
        yield
    finally:
        group.procs["replica0"].kill_group(signal.SIGCONT)


def create(store: JobStore, settings: Settings, keyed: bool = False) -> str:
    job_id = new_job_id()
    options = JobOptions(idempotency_key="k-" + job_id) if keyed else None
    record_job(store, settings, job_id, keyed=keyed, family="stable-diffusion", pipeline="StableDiffusionPipeline",
               checkpoint="tiny-sd", revision=None, task=Task.TEXT2IMAGE, spec=job_spec(), options=options)
    return job_id


def on_replica(group: SentinelGroup, job_id: str) -> object:
    return redis.Redis(port=group.replica_ports[0], decode_responses=True).hget(keys.job(job_id), "status")


def test_an_accepted_job_is_on_the_replica_already(store: JobStore, durable: Settings,
                                                   sentinel_group: SentinelGroup) -> None:
    job_id = create(store, durable)
    assert on_replica(sentinel_group, job_id) == "queued"


def test_unconfirmed_with_a_key_names_the_job_and_keeps_it(store: JobStore, durable: Settings,
                                                            sentinel_group: SentinelGroup) -> None:
    with replica_stopped(sentinel_group), pytest.raises(NotReplicated) as refused:
        create(store, durable, keyed=True)
    job = store.get(refused.value.job_id)
    assert job is not None and job.record.status == Status.QUEUED  # a retry with the key gets it back
    assert "same Idempotency-Key" in refused.value.message


def test_unconfirmed_without_a_key_cancels_the_job(store: JobStore, durable: Settings,
                                                   sentinel_group: SentinelGroup) -> None:
    with replica_stopped(sentinel_group), pytest.raises(NotReplicated) as refused:
        create(store, durable)
    job = store.get(refused.value.job_id)
    assert job is not None and job.record.status == Status.CANCELED  # it never runs besides the retry


def test_without_the_setting_nothing_waits(store: JobStore, durable: Settings, sentinel_group: SentinelGroup) -> None:
    with replica_stopped(sentinel_group):
        job_id = create(store, replace(durable, redis_submit_replicas=0))
    assert store.get(job_id) is not None


def test_the_api_answers_503_with_retry_after_naming_the_job(
        make_api: Callable[[Settings], TestClient], settings: Settings, durable: Settings,
        sentinel_group: SentinelGroup, model_root: Path) -> None:
    api = make_api(replace(settings, **{name: getattr(durable, name) for name in (
        "redis_sentinels", "redis_master_name", "redis_submit_replicas", "redis_submit_wait_ms")}))
    assert api.post("/v1/jobs", json=BODY).status_code == 202
    with replica_stopped(sentinel_group):
        refused = api.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": "durable-1"})
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    error = refused.json()["error"]
    assert error["code"] == "not_replicated" and error["job_id"]
    again = api.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": "durable-1"})
    assert again.status_code in (200, 202) and again.json()["id"] == error["job_id"]
