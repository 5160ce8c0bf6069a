"""The queue module: names, priority lists, own queues and the backlog count, on the real redis-server."""

from __future__ import annotations

import redis
from kombu.transport.redis import Channel

from hotpipe.shared import keys
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.messages import enqueue
from hotpipe.shared.queues import (
    backlog,
    count_queues,
    family_lists,
    family_queue,
    priority_lists,
    priority_step,
    queue_depths,
    queued,
    running,
    waiting,
    worker_queue,
)
from hotpipe.shared.registry import Registry, WorkerInfo
from hotpipe.shared.store import JobStore
from tests.jobs import claim, job_spec

FAMILY = "stable-diffusion"


def queued_job(store: JobStore, priority: int = 5) -> str:
    job_id = new_job_id()
    store.create(job_id, family=FAMILY, pipeline="StableDiffusionPipeline", checkpoint="tiny-sd", revision=None,
                 task=Task.TEXT2IMAGE, spec=job_spec(priority))
    return job_id


def live_worker(client: redis.Redis, name: str, *families: str) -> str:
    """A live worker serving ``families``; its own queue."""
    Registry(client, ttl_s=60).publish(WorkerInfo(name=name, queue=worker_queue(name), families=list(families),
                                                  device="cpu", ready=True))
    return worker_queue(name)


def test_names_are_keys_and_kombus() -> None:
    assert family_queue(FAMILY) == FAMILY == keys.family_queue(FAMILY)
    assert worker_queue("a@h") == "hotpipe.worker.a@h" == keys.worker_queue("a@h")
    assert family_lists(FAMILY) == [FAMILY, *(f"{FAMILY}{Channel.sep}{step}" for step in range(1, 10))]
    assert priority_lists("q") == [keys.priority_list("q", step) for step in range(10)]
    assert [priority_step(p) for p in (9, 5, 0)] == [0, 4, 9]  # API 9 is read first


def test_backlog_counts_every_priority_list(redis_client: redis.Redis, store: JobStore) -> None:
    queue = worker_queue("a@h")
    for priority in (0, 5, 9):
        enqueue(redis_client, queued_job(store), FAMILY, priority, queue=queue)
    assert queue_depths(redis_client, [queue, worker_queue("b@h")]) == {queue: 3, worker_queue("b@h"): 0}


def test_counts_on_a_shared_pipeline_read_only_their_own_replies(redis_client: redis.Redis) -> None:
    redis_client.rpush(family_lists(FAMILY)[3], "m", "m")
    pipe = redis_client.pipeline(transaction=False)
    pipe.set("before", 1)
    read = count_queues(pipe, [FAMILY, "empty"])
    pipe.get("before")
    assert read(pipe.execute()) == {FAMILY: 2, "empty": 0}


def test_a_familys_backlog_is_its_queue_and_its_live_workers_own_queues(redis_client: redis.Redis) -> None:
    redis_client.rpush(family_lists(FAMILY)[0], "m")
    redis_client.rpush(family_lists(FAMILY)[9], "m")
    redis_client.rpush(priority_lists(live_worker(redis_client, "a@h", FAMILY))[4], "m")
    redis_client.rpush(priority_lists(live_worker(redis_client, "b@h", FAMILY, "flux"))[1], "m")
    redis_client.rpush(priority_lists(live_worker(redis_client, "c@h", "flux"))[0], "m")
    redis_client.rpush(priority_lists(worker_queue("dead@h"))[0], "m")  # no record: a reaper drains it
    assert queued(redis_client, [FAMILY, "flux", "if"]) == {FAMILY: 4, "flux": 2, "if": 0}
    assert waiting(redis_client, FAMILY) == 4 and waiting(redis_client, "flux") == 2


def test_running_jobs_are_counted_from_the_leases(redis_client: redis.Redis, store: JobStore) -> None:
    claimed, waits = queued_job(store), queued_job(store)
    assert claim(store, claimed) == 1
    enqueue(redis_client, waits, FAMILY)
    counts = backlog(redis_client, [FAMILY])
    assert counts.running == running(redis_client) == {FAMILY: 1}
    assert counts.queued == {FAMILY: 1}  # the running job is in no list
