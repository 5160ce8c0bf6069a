"""The parent's hand-back of a dead pool child's attempts, batch included (real redis-server)."""

from __future__ import annotations

import functools

import pytest
import redis

from hotpipe.shared.messages import enqueue
from hotpipe.shared.reaper import Reaper
from hotpipe.shared.status import Status
from hotpipe.shared.store import JobStore
from hotpipe.workers.recovery import take_back_child
from tests.jobs import claim, job_spec

DEAD, ALIVE = "w@host pid=5", "w@host pid=6"


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=60)


def running(store: JobStore, job_id: str, worker: str) -> str:
    store.create(job_id, family="stable-diffusion", pipeline="StableDiffusionPipeline", checkpoint="tiny-sd",
                 revision=None, task=job_spec().task, spec=job_spec())
    assert claim(store, job_id, worker) == 1
    return job_id


@pytest.mark.parametrize("batching", [True, False])
def test_every_attempt_the_dead_child_held_comes_back_with_batching(store: JobStore, redis_client: redis.Redis,
                                                                   batching: bool) -> None:
    request, taken, other = running(store, "req", DEAD), running(store, "taken", DEAD), running(store, "o", ALIVE)
    reaper = Reaper(store, functools.partial(enqueue, redis_client), max_attempts=3, silence_s=30)
    report = take_back_child(reaper, request, DEAD, batching)
    assert sorted(report.queued) == sorted([request, taken] if batching else [request])
    status = {j: store.get(j).record.status for j in (request, taken, other)}  # type: ignore[union-attr]
    assert status == {request: Status.QUEUED, taken: Status.QUEUED if batching else Status.RUNNING,
                      other: Status.RUNNING}  # another child's job is never touched
