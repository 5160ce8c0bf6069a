"""The worker registry and the drain of dead workers' queues, on the real redis-server."""

from __future__ import annotations

import time

import redis

from hotpipe.shared import keys
from hotpipe.shared.drain import drain_dead
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.messages import enqueue
from hotpipe.shared.queues import priority_lists, worker_queue
from hotpipe.shared.reaper import Publish, Reaper
from hotpipe.shared.registry import HotCheckpoint, Registry, WorkerInfo, message_job_id
from hotpipe.shared.store import JobStore
from tests.e2e.polling import wait_for
from tests.jobs import job_spec
from tests.shared.test_reaper import published_by_list

FAMILY = "stable-diffusion"




def info(name: str, *hot: str, ready: bool = True) -> WorkerInfo:
    return WorkerInfo(name=name, queue=worker_queue(name), families=[FAMILY], device="cpu", ready=ready,
                      hot=[HotCheckpoint(h, uses=1, bytes=10) for h in hot])


def queued_job(store: JobStore, priority: int = 5) -> str:
    job_id = new_job_id()
    store.create(job_id, family=FAMILY, pipeline="StableDiffusionPipeline", checkpoint="tiny-sd", revision=None,
                 task=Task.TEXT2IMAGE, spec=job_spec(priority))
    return job_id


def waiting(store: JobStore, queue: str) -> list[str]:
    ids = []
    for name in priority_lists(queue):
        ids += [message_job_id(str(m)) or "?" for m in store.redis.lrange(name, 0, -1)]
    return ids


def test_a_published_worker_is_live_until_its_ttl_passes(redis_client: redis.Redis) -> None:
    registry = Registry(redis_client, ttl_s=0.3)
    registry.publish(info("a@h", "tiny-sd"))
    live = registry.live()
    assert [w.name for w in live] == ["a@h"] and live[0].holds("tiny-sd") and not live[0].holds("other")
    assert registry.dead(0) == []
    wait_for(lambda: registry.live() == [], "the record expires")
    assert registry.dead(0) == ["a@h"]


def test_one_registry_reading_again_sees_new_workers_changed_records_and_departures(redis_client: redis.Redis) -> None:
    reading, writing = Registry(redis_client), Registry(redis_client)
    writing.publish(info("w1"))
    assert [w.hot for w in reading.live()] == [[]]
    writing.publish(info("w1", "tiny-sd"))  # same names: read with them, in the same round trip
    writing.publish(info("w2"))
    assert [(w.name, [h.checkpoint for h in w.hot]) for w in reading.live()] == [("w1", ["tiny-sd"]), ("w2", [])]
    writing.publish(info("w2", "tiny-sdxl"))
    assert [[h.checkpoint for h in w.hot] for w in reading.live()] == [["tiny-sd"], ["tiny-sdxl"]]
    writing.retire("w1")
    assert [w.name for w in reading.live()] == ["w2"]


def test_retire_makes_a_worker_dead_at_once(redis_client: redis.Redis) -> None:
    registry = Registry(redis_client, ttl_s=60)
    registry.publish(info("a@h"))
    registry.retire("a@h")
    assert registry.live() == [] and registry.dead(0) == ["a@h"]


def test_a_dead_workers_queue_is_drained_to_the_family_queue(redis_client: redis.Redis, store: JobStore,
                                                             publish: Publish) -> None:
    registry = Registry(redis_client, ttl_s=0.2)
    registry.publish(info("a@h"))
    registry.publish(info("b@h"))
    urgent, normal, canceled = queued_job(store, 9), queued_job(store, 5), queued_job(store)
    for job_id, priority in ((urgent, 9), (normal, 5), (canceled, 5)):
        enqueue(redis_client, job_id, FAMILY, priority, queue=worker_queue("a@h"))
    store.cancel(canceled)

    assert drain_dead(registry, store, publish, forget_after_s=60) == []  # both alive: nothing moves
    registry.publish(info("b@h"))
    time.sleep(0.3)
    registry.publish(info("b@h"))  # b stays alive, a has expired
    moved = drain_dead(registry, store, publish, forget_after_s=60)

    assert sorted(moved) == sorted([urgent, normal])
    assert waiting(store, worker_queue("a@h")) == []
    by_list = published_by_list(store)
    assert by_list == {FAMILY: [urgent], f"{FAMILY}\x06\x164": [normal]}  # each at its own priority
    assert "a@h" in redis_client.zrange(keys.workers(), 0, -1)  # not forgotten yet: dead for < 60 s
    drain_dead(registry, store, publish, forget_after_s=0)
    assert redis_client.zrange(keys.workers(), 0, -1) == ["b@h"]


def test_the_reaper_drains_dead_workers(redis_client: redis.Redis, store: JobStore,
                                       publish: Publish) -> None:
    registry = Registry(redis_client, ttl_s=60)
    job_id = queued_job(store)
    enqueue(redis_client, job_id, FAMILY, queue=worker_queue("gone@h"))
    registry.publish(info("gone@h"))
    registry.retire("gone@h")
    report = Reaper(store, publish, max_attempts=3, silence_s=30, registry=registry).run_once()
    assert report.drained == [job_id]
    assert published_by_list(store) == {f"{FAMILY}\x06\x164": [job_id]}
