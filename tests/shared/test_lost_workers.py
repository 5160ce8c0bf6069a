"""Taking jobs back from dead workers without waiting for their leases, against the real redis-server.

A worker silent in the registry for a whole TTL has its jobs taken back by any reaper's pass; a
Celery parent whose pool child died hands back exactly the attempt that child held.  Both are
fenced by attempt and keep the attempt cap.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hotpipe.devstack import free_port
from hotpipe.shared import keys
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.queues import worker_queue
from hotpipe.shared.reaper import Publish, Reaper, ReapReport
from hotpipe.shared.registry import Registry, WorkerInfo
from hotpipe.shared.status import Status
from hotpipe.shared.store import WORKER_LOST, JobStore
from tests.jobs import claim, job_spec
from tests.shared.test_reaper import FAMILY, SILENCE_S, published

DEAD, ALIVE, UNREGISTERED = "dead@host", "alive@host", "plain@host"


def held_by(store: JobStore, node: str, pid: int = 100) -> str:
    """A running job whose lease is far from lapsing, claimed by ``node``'s pool child ``pid``."""
    job_id = new_job_id()
    store.create(job_id, family=FAMILY, pipeline="StableDiffusionPipeline", checkpoint="tiny-sd", revision=None,
                 task=Task.TEXT2IMAGE, spec=job_spec())
    assert claim(store, job_id, worker=f"{node} pid={pid}") is not None
    return job_id


def registry_with_one_dead_worker(store: JobStore) -> Registry:
    registry = Registry(store.redis, ttl_s=600)
    for name in (DEAD, ALIVE):
        registry.publish(WorkerInfo(name=name, queue=worker_queue(name), families=[FAMILY], device="cpu"))
    seconds, micros = store.redis.time()  # its record's TTL ran out just now: silent for a whole window
    store.redis.zadd(keys.workers(), {DEAD: seconds * 1000 + micros // 1000 - 1})
    store.redis.delete(keys.worker(DEAD))
    return registry


def reaper(store: JobStore, publish: Publish, registry: Registry | None = None, max_attempts: int = 3) -> Reaper:
    return Reaper(store, publish, max_attempts=max_attempts, silence_s=SILENCE_S, registry=registry)


def status(store: JobStore, job_id: str) -> tuple[Status, int]:
    job = store.get(job_id)
    assert job is not None
    return job.record.status, job.record.attempts


def test_a_silent_workers_jobs_are_taken_back_before_their_leases_lapse(store: JobStore, publish: Publish) -> None:
    registry = registry_with_one_dead_worker(store)
    lost, kept, unknown = held_by(store, DEAD), held_by(store, ALIVE), held_by(store, UNREGISTERED)

    report = reaper(store, publish, registry).run_once()
    assert report.queued == [lost] and published(store) == [lost]
    assert status(store, lost) == (Status.QUEUED, 1)
    # a live worker's job, and one whose worker never registered (left to its lease), stay running
    assert status(store, kept) == (Status.RUNNING, 1) and status(store, unknown) == (Status.RUNNING, 1)
    assert reaper(store, publish, registry).run_once().queued == []  # nothing twice


def test_the_paused_attempt_of_a_silent_worker_can_no_longer_write(store: JobStore, publish: Publish) -> None:
    registry = registry_with_one_dead_worker(store)
    job_id = held_by(store, DEAD)
    reaper(store, publish, registry).run_once()
    assert claim(store, job_id, worker=f"{ALIVE} pid=7") == 2

    assert store.renew(job_id, 1) is False  # it wakes up: its heartbeat finds the job gone and stands down
    assert reaper(store, publish, registry).run_once().queued == []  # attempt 2 runs on a live worker
    assert status(store, job_id) == (Status.RUNNING, 2)


def test_a_silent_worker_on_the_last_attempt_ends_the_job_worker_lost(store: JobStore, publish: Publish) -> None:
    registry = registry_with_one_dead_worker(store)
    job_id = held_by(store, DEAD)
    report = reaper(store, publish, registry, max_attempts=1).run_once()
    assert report.failed == [job_id] and published(store) == []
    job = store.get(job_id)
    assert job is not None and job.record.error is not None and job.record.error.code == WORKER_LOST


def test_a_dead_pool_childs_attempt_is_handed_back_exactly(store: JobStore, publish: Publish) -> None:
    job_id = held_by(store, ALIVE, pid=41)
    hand_back = reaper(store, publish)
    assert hand_back.take_back_lost(job_id, f"{ALIVE} pid=40") == ReapReport()  # another child's: not this one
    assert hand_back.take_back_lost(job_id, f"{DEAD} pid=41") == ReapReport()
    assert status(store, job_id) == (Status.RUNNING, 1) and published(store) == []

    assert hand_back.take_back_lost(job_id, f"{ALIVE} pid=41") == ReapReport(queued=[job_id])
    assert status(store, job_id) == (Status.QUEUED, 1) and published(store) == [job_id]
    assert store.redis.zcard(keys.requeues()) == 0  # the message is out, the outbox clear
    assert hand_back.take_back_lost(job_id, f"{ALIVE} pid=41") == ReapReport()  # a second report changes nothing


def test_a_child_that_dies_on_every_attempt_ends_worker_lost_at_the_cap(store: JobStore, publish: Publish) -> None:
    job_id = held_by(store, ALIVE, pid=1)
    hand_back = reaper(store, publish, max_attempts=2)
    assert hand_back.take_back_lost(job_id, f"{ALIVE} pid=1").queued == [job_id]
    assert claim(store, job_id, worker=f"{ALIVE} pid=2") == 2
    assert hand_back.take_back_lost(job_id, f"{ALIVE} pid=2").failed == [job_id]
    job = store.get(job_id)
    assert job is not None and job.record.status is Status.FAILED and job.record.attempts == 2
    assert job.record.error is not None and job.record.error.code == WORKER_LOST
    assert published(store) == [job_id]  # one message, for attempt 2; none after the last


def test_silence_counts_only_once_the_reaper_has_reached_redis_for_a_while(store: JobStore, publish: Publish) -> None:
    """After a Redis outage every worker's record has expired until its next heartbeat gets through:
    a reaper that has only just (re)connected must not take their jobs."""
    registry = registry_with_one_dead_worker(store)
    job_id = held_by(store, DEAD)
    settling = Reaper(store, publish, max_attempts=3, silence_s=SILENCE_S, registry=registry, settle_s=3600)
    assert settling.run_once().queued == [] and status(store, job_id) == (Status.RUNNING, 1)

    settling._reachable_since = -3600.0  # ... reachable for an hour now
    assert settling.run_once().queued == [job_id]


def test_a_failed_pass_restarts_the_settling(store: JobStore, publish: Publish) -> None:
    nobody = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    down = Reaper(JobStore(nobody, record_ttl_s=600), publish, max_attempts=3, silence_s=SILENCE_S, settle_s=1)
    down._reachable_since = -3600.0
    assert down.tick() is None and down._reachable_since is None
