"""The webhook dispatcher against a real HTTP receiver on loopback and the real Redis outbox."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from hotpipe.devstack import LOCAL_AWS_ENV
from hotpipe.producer.webhook_dispatcher import Dispatcher, backoff_s
from hotpipe.shared import keys
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.settings import Settings
from hotpipe.shared.store import JobOptions, JobStore
from hotpipe.shared.webhook_outbox import Outbox
from hotpipe.shared.webhooks import verify
from tests.e2e.polling import wait_for
from tests.jobs import claim, job_spec
from tests.receiver import Receiver, receiver
from tests.shared.test_store import RESULT
from tests.twin_hosts import NAME, PRIVATE, PUBLIC, rebinding, twin_hosts

SECRET = "test-secret"


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=600)


@pytest.fixture
def dispatcher(redis_client: redis.Redis, settings: Settings) -> Iterator[Dispatcher]:
    s = dataclasses.replace(settings, webhook_secret=SECRET, webhook_allow_private=True, webhook_backoff_s=0.01,
                            webhook_max_tries=3)
    d = Dispatcher(Outbox(redis_client), s, lambda r: r.model_dump_json(exclude_none=True))
    yield d
    d.stop()


def hooked_job(store: JobStore, url: str, events: tuple[str, ...] = ("start", "progress", "completed")) -> str:
    job_id = new_job_id()
    store.create(job_id, family="stable-diffusion", pipeline="StableDiffusionPipeline", checkpoint="tiny-sd",
                 revision=None, task=Task.TEXT2IMAGE, spec=job_spec(),
                 options=JobOptions(webhook_url=url, webhook_events=events, webhook_progress_s=0))
    return job_id


def drain(dispatcher: Dispatcher) -> None:
    """Run passes until the outbox is empty (retries are due after a few ms)."""
    wait_for(lambda: dispatcher.run_once() == 0 and dispatcher.outbox.pending() == 0, "outbox drained", 30)


def test_each_event_is_delivered_signed_with_the_record(store: JobStore, dispatcher: Dispatcher,
                                                        hook: Receiver) -> None:
    job_id = hooked_job(store, hook.url)
    claim(store, job_id)
    store.progress(job_id, 1, 1, 2)
    store.succeed(job_id, 1, RESULT)
    drain(dispatcher)
    assert sorted(d.headers["hotpipe-event"] for d in hook.deliveries) == ["completed", "progress", "start"]
    for delivery in hook.deliveries:
        assert verify(SECRET, delivery.headers, delivery.body)
        assert not verify("wrong", delivery.headers, delivery.body)
        assert json.loads(delivery.body)["id"] == job_id
    (done,) = hook.of("completed")
    assert json.loads(done.body)["status"] == "succeeded" and json.loads(done.body)["result"]["images"]
    assert json.loads(hook.of("start")[0].body)["status"] == "running"


def test_a_failing_receiver_gets_retries_with_the_same_event_id(store: JobStore, dispatcher: Dispatcher,
                                                                hook: Receiver) -> None:
    hook.answer = lambda h: 503 if len(hook.of("completed")) < 2 else 200
    job_id = hooked_job(store, hook.url, ("completed",))
    store.cancel(job_id)
    drain(dispatcher)
    tries = hook.of("completed")
    assert [t.status for t in tries] == [503, 503, 200]
    assert len({t.headers["hotpipe-event-id"] for t in tries}) == 1
    assert all(verify(SECRET, t.headers, t.body) for t in tries)


def test_retries_stop_at_the_cap(store: JobStore, dispatcher: Dispatcher, hook: Receiver) -> None:
    hook.answer = lambda h: 500
    job_id = hooked_job(store, hook.url, ("completed",))
    store.cancel(job_id)
    drain(dispatcher)
    assert len(hook.of("completed")) == dispatcher.settings.webhook_max_tries
    assert store.redis.hlen(keys.webhook_events()) == 0


def test_progress_is_tried_once(store: JobStore, dispatcher: Dispatcher, hook: Receiver) -> None:
    hook.answer = lambda h: 500
    job_id = hooked_job(store, hook.url, ("progress",))
    claim(store, job_id)
    store.progress(job_id, 1, 1, 2)
    drain(dispatcher)
    assert len(hook.of("progress")) == 1


def test_an_unreachable_receiver_is_retried_like_a_failure(store: JobStore, dispatcher: Dispatcher) -> None:
    job_id = hooked_job(store, "http://127.0.0.1:9/nobody-listens", ("completed",))
    store.cancel(job_id)
    (event,) = dispatcher.outbox.claim(10, 60)
    assert dispatcher.deliver(event) is False
    (again,) = wait_for(lambda: dispatcher.outbox.claim(10, 60), "the retry comes due")
    assert (again.id, again.tries) == (event.id, 1)


def test_the_body_is_the_record_as_it_was_when_the_event_happened(store: JobStore, dispatcher: Dispatcher,
                                                                 hook: Receiver) -> None:
    job_id = hooked_job(store, hook.url, ("start",))
    claim(store, job_id)
    store.succeed(job_id, 1, RESULT)  # before the start event is delivered
    drain(dispatcher)
    (start,) = hook.of("start")
    assert json.loads(start.body)["status"] == "running"


def test_a_delivery_goes_only_to_the_address_it_checked(store: JobStore, redis_client: redis.Redis,
                                                        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver's name answers public, then private (DNS rebinding): the first delivery reaches
    the public address, the next connection is refused, and the private one never hears a thing."""
    strict = dataclasses.replace(settings, webhook_secret=SECRET, webhook_allow_private=False, webhook_max_tries=1)
    dispatcher = Dispatcher(Outbox(redis_client), strict, lambda r: r.model_dump_json(exclude_none=True))
    try:
        with twin_hosts() as twins:
            lookups = rebinding(monkeypatch)
            url = f"http://{NAME}:{twins.port}/hook"
            for _ in range(2):
                store.cancel(hooked_job(store, url, ("completed",)))
                drain(dispatcher)
            assert twins.got(PUBLIC) == [f"{NAME}:{twins.port}"] and twins.got(PRIVATE) == []
            assert lookups == [NAME, NAME]
    finally:
        dispatcher.stop()


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff_s(1.0, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff_s(1.0, 30) == 300.0


def test_hotpipe_webhooks_delivers_outside_the_api(make_api: Callable[[Settings], TestClient], settings: Settings,
                                                   hook: Receiver) -> None:
    quiet = dataclasses.replace(settings, webhook_secret=SECRET, webhook_allow_private=True,
                                webhook_dispatcher=False)
    api = make_api(quiet)
    job = api.post("/v1/jobs", json={"checkpoint": "tiny-sd", "task": "text2image", "params": {"prompt": "x"},
                                     "webhook_url": hook.url, "webhook_events": ["completed"]}).json()
    api.post(f"/v1/jobs/{job['id']}/cancel")
    env = {**os.environ, **LOCAL_AWS_ENV, **quiet.to_env()}
    proc = subprocess.Popen([sys.executable, "-m", "hotpipe", "webhooks"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        (done,) = wait_for(lambda: hook.of("completed"), "the standalone dispatcher delivered", 60)
    finally:
        proc.terminate()
        proc.wait(10)
    assert verify(SECRET, done.headers, done.body)
    assert json.loads(done.body)["status"] == "canceled"
