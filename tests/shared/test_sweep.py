"""The sweep for run messages lost in flight, on the real redis-server.

"Lost in flight" is played the way it happens: the message is popped off its list (as a
frozen worker's BRPOP does) and never delivered.  Jobs are made stale by setting their
queued-since score in the past, so no test waits for a clock.
"""

from __future__ import annotations

from hotpipe.shared import keys
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.messages import enqueue, run_message
from hotpipe.shared.queues import family_lists, worker_queue
from hotpipe.shared.reaper import Publish, Reaper
from hotpipe.shared.registry import Registry, WorkerInfo
from hotpipe.shared.store import JobStore
from hotpipe.shared.sweep import sweep_lost_messages
from tests.jobs import claim, job_spec
from tests.shared.test_reaper import published, published_by_list

FAMILY = "stable-diffusion"
STALE_S = 60.0




def submitted(store: JobStore, priority: int = 5, stale: bool = True) -> str:
    """A job created with its message, as a submit creates it; ``stale``: queued long ago."""
    job_id = new_job_id()
    store.create(job_id, family=FAMILY, pipeline="StableDiffusionPipeline", checkpoint="tiny-sd", revision=None,
                 task=Task.TEXT2IMAGE, spec=job_spec(priority), message=run_message(job_id, FAMILY, priority))
    if stale:
        store.redis.zadd(keys.queued_jobs(), {job_id: 0}, xx=True)
    return job_id


def lose_every_message(store: JobStore) -> None:
    """A frozen worker's BRPOP took them: off the lists, never delivered."""
    store.redis.delete(*family_lists(FAMILY))


def test_a_stale_queued_job_whose_message_was_lost_gets_one_again(store: JobStore, publish: Publish) -> None:
    urgent, plain = submitted(store, priority=9), submitted(store)
    lose_every_message(store)
    assert sorted(sweep_lost_messages(store, publish, STALE_S)) == sorted([urgent, plain])
    assert published_by_list(store) == {FAMILY: [urgent], family_lists(FAMILY)[4]: [plain]}  # at their priorities
    assert sweep_lost_messages(store, publish, STALE_S) == []  # its clock restarted: once a period


def test_a_job_whose_message_waits_is_left_alone(store: JobStore, publish: Publish) -> None:
    waiting = submitted(store)
    assert sweep_lost_messages(store, publish, STALE_S) == []
    assert published(store) == [waiting]


def test_a_job_behind_a_backlog_is_left_alone(store: JobStore, publish: Publish) -> None:
    lost = submitted(store)
    lose_every_message(store)
    behind = submitted(store, stale=False)  # a fresh job's message: the family's queue is not empty
    assert sweep_lost_messages(store, publish, STALE_S) == []
    assert published(store) == [behind] and lost != behind


def test_a_message_waiting_in_a_live_workers_own_queue_counts(store: JobStore, publish: Publish) -> None:
    submitted(store)
    lose_every_message(store)
    Registry(store.redis, ttl_s=60).publish(WorkerInfo(name="a@h", queue=worker_queue("a@h"), families=[FAMILY],
                                                       device="cpu", ready=True))
    enqueue(store.redis, new_job_id(), FAMILY, queue=worker_queue("a@h"))
    assert sweep_lost_messages(store, publish, STALE_S) == []


def test_only_queued_jobs_are_in_the_set(store: JobStore, publish: Publish) -> None:
    claimed, canceled, fresh = submitted(store), submitted(store), submitted(store, stale=False)
    assert claim(store, claimed) == 1
    store.cancel(canceled)
    assert set(store.redis.zrange(keys.queued_jobs(), 0, -1)) == {fresh}
    store.redis.zadd(keys.leases(), {claimed: 0}, xx=True)  # its worker died
    lapsed = store.reap(claimed, max_attempts=3)
    assert lapsed is not None and lapsed.outcome == "queued"
    assert set(store.redis.zrange(keys.queued_jobs(), 0, -1)) == {fresh, claimed}  # requeued: back in


def test_the_reaper_sweeps_when_configured(store: JobStore, publish: Publish) -> None:
    lost = submitted(store)
    lose_every_message(store)
    assert Reaper(store, publish, max_attempts=3, silence_s=60).run_once().resent == []  # off by default
    assert Reaper(store, publish, max_attempts=3, silence_s=60, stale_queued_s=STALE_S).run_once().resent == [lost]
    assert published(store) == [lost]
