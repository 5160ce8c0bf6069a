"""The reaper against the real redis-server, publishing real Celery messages to it.

What a pass publishes is read back from the broker's list for the family's queue, so
"one message per requeued job" is counted on the wire.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hotpipe.devstack import free_port
from hotpipe.shared import keys
from hotpipe.shared.celery_app import DEFAULT_PRIORITY
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.messages import enqueue
from hotpipe.shared.queues import family_queue
from hotpipe.shared.reaper import Publish, Reaper
from hotpipe.shared.status import Status
from hotpipe.shared.store import JobStore
from tests.jobs import claim, job_spec

FAMILY = "stable-diffusion"
SILENCE_S = 30.0
#: kombu keeps priority p of a queue in the list "{queue}\x06\x16{p}" ("{queue}" for 0)
PRIORITY_SEP = "\x06\x16"




def published_by_list(store: JobStore) -> dict[str, list[str]]:
    """Job ids of the run messages waiting on the family's queue, by kombu list, oldest first."""
    queue = family_queue(FAMILY)
    found: dict[str, list[str]] = {}
    for name in [queue] + [f"{queue}{PRIORITY_SEP}{p}" for p in range(1, 10)]:
        raw: list[str] = store.redis.lrange(name, 0, -1)  # type: ignore[assignment]
        for message in reversed(raw):  # kombu LPUSHes, workers BRPOP
            doc = json.loads(message)
            assert doc["properties"]["body_encoding"] == "base64"
            found.setdefault(name, []).append(json.loads(base64.b64decode(doc["body"]))[0][0])
    return found


def published(store: JobStore) -> list[str]:
    return [job_id for ids in published_by_list(store).values() for job_id in ids]


def running_job(store: JobStore, lapsed: bool = True, priority: int = DEFAULT_PRIORITY) -> str:
    """A claimed job; ``lapsed``: its worker died long ago."""
    job_id = new_job_id()
    store.create(job_id, family=FAMILY, pipeline="StableDiffusionPipeline", checkpoint="tiny-sd", revision=None,
                 task=Task.TEXT2IMAGE, spec=job_spec(priority))
    assert claim(store, job_id) == 1
    if lapsed:
        store.redis.zadd(keys.leases(), {job_id: 0}, xx=True)
    return job_id


def status(store: JobStore, job_id: str) -> Status:
    job = store.get(job_id)
    assert job is not None
    return job.record.status


def test_a_pass_requeues_lapsed_jobs_and_publishes_one_message_each(store: JobStore, publish: Publish) -> None:
    lapsed = [running_job(store) for _ in range(3)]
    alive = running_job(store, lapsed=False)
    report = Reaper(store, publish, max_attempts=3, silence_s=SILENCE_S).run_once()

    assert sorted(report.queued) == sorted(lapsed) and report.unpublished == []
    assert sorted(published(store)) == sorted(lapsed)
    assert all(status(store, j) is Status.QUEUED for j in lapsed) and status(store, alive) is Status.RUNNING
    assert store.redis.zcard(keys.requeues()) == 0  # every debt paid
    assert Reaper(store, publish, max_attempts=3, silence_s=SILENCE_S).run_once().queued == []


def test_a_requeued_job_keeps_its_priority(store: JobStore, publish: Publish) -> None:
    urgent, plain = running_job(store, priority=9), running_job(store)
    Reaper(store, publish, max_attempts=3, silence_s=SILENCE_S).run_once()
    queue = family_queue(FAMILY)
    assert published_by_list(store) == {  # API priority p is kombu priority 9 - p
        queue: [urgent], f"{queue}{PRIORITY_SEP}{9 - DEFAULT_PRIORITY}": [plain]}


def test_a_pass_works_through_more_lapsed_jobs_than_one_batch(store: JobStore, publish: Publish) -> None:
    lapsed = [running_job(store) for _ in range(5)]
    report = Reaper(store, publish, max_attempts=3, silence_s=SILENCE_S, batch=2).run_once()
    assert sorted(report.queued) == sorted(lapsed) and sorted(published(store)) == sorted(lapsed)


def test_last_attempt_fails_and_a_pending_cancel_cancels_without_a_message(store: JobStore,
                                                                          publish: Publish) -> None:
    lost = running_job(store)
    to_cancel = running_job(store)
    store.cancel(to_cancel)
    report = Reaper(store, publish, max_attempts=1, silence_s=SILENCE_S).run_once()
    assert (report.failed, report.canceled, report.queued) == ([lost], [to_cancel], [])
    assert published(store) == []


def test_a_failed_publish_stays_owed_until_a_later_pass_pays_it(store: JobStore, publish: Publish) -> None:
    job_id = running_job(store)
    nowhere = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    broken = Reaper(store, functools.partial(enqueue, nowhere), max_attempts=3, silence_s=SILENCE_S).run_once()
    assert broken.queued == [job_id] and broken.unpublished == [job_id]
    assert status(store, job_id) is Status.QUEUED and published(store) == []
    assert store.redis.zscore(keys.requeues(), job_id) is not None

    healthy = Reaper(store, publish, max_attempts=3, silence_s=SILENCE_S)
    assert healthy.run_once().republished == []  # its publisher might still be alive: wait the silence out
    store.redis.zadd(keys.requeues(), {job_id: 0})  # ... which has now passed
    assert healthy.run_once().republished == [job_id]
    assert published(store) == [job_id] and store.redis.zcard(keys.requeues()) == 0


def test_reapers_racing_over_the_same_jobs_publish_each_once(store: JobStore, redis_server: str,
                                                             publish: Publish) -> None:
    lapsed = [running_job(store) for _ in range(20)]
    barrier = threading.Barrier(4)

    def one_reaper(_: int) -> list[str]:
        own = JobStore(redis.Redis.from_url(redis_server, decode_responses=True), record_ttl_s=600)
        barrier.wait()
        return Reaper(own, publish, max_attempts=3, silence_s=SILENCE_S, batch=3).run_once().queued

    with ThreadPoolExecutor(4) as pool:
        won = [job_id for queued in pool.map(one_reaper, range(4)) for job_id in queued]
    assert sorted(won) == sorted(lapsed)
    assert sorted(published(store)) == sorted(lapsed)


def test_tick_survives_a_redis_outage(publish: Publish) -> None:
    nobody = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    down = JobStore(nobody, record_ttl_s=600)
    Reaper(down, publish, max_attempts=3, silence_s=SILENCE_S).tick()  # logs, does not raise
    with pytest.raises(redis.ConnectionError):
        Reaper(down, publish, max_attempts=3, silence_s=SILENCE_S).run_once()
