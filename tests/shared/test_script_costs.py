"""What the job scripts cost Redis, counted by the server itself (``INFO commandstats``, reset per
test) on a real redis-server: each reads the job hash once, writes it once and reads the clock once,
and the uploading stage carries the last step's progress (``benchmarks/redis_cost.py`` measures a
whole job)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import redis

from hotpipe.shared import keys
from hotpipe.shared.store import CANCEL_REQUESTED, JobStore
from tests.shared.test_store import RESULT, create


def commands(client: redis.Redis, action: Callable[[], object]) -> Counter[str]:
    """The commands Redis ran for ``action``, inside scripts too, by name."""
    client.config_resetstat()
    action()
    stats = client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()
                    if k != "cmdstat_config|resetstat"})


def claimed(store: JobStore) -> str:
    job_id = create(store)
    assert store.claim_job(job_id) is not None
    return job_id


def test_a_claim_reads_the_record_once_and_writes_it_once(store: JobStore) -> None:
    job_id = create(store)
    ran = commands(store.redis, lambda: store.claim_job(job_id))
    assert (ran["hgetall"], ran["hset"], ran["time"]) == (1, 1, 1)
    assert not (ran["hget"] or ran["hmget"] or ran["zscore"])  # the index score is in the record


def test_a_terminal_write_reads_the_record_once_and_writes_it_once(store: JobStore) -> None:
    job_id = claimed(store)
    ran = commands(store.redis, lambda: store.succeed(job_id, 1, RESULT))
    assert (ran["hgetall"], ran["hset"], ran["time"]) == (1, 1, 1)
    assert not (ran["hget"] or ran["hmget"] or ran["zscore"])


def test_the_uploading_stage_carries_the_last_progress_and_announces_both(store: JobStore) -> None:
    job_id = claimed(store)
    assert store.set_stage(job_id, 1, "running") == 1  # (the script is loaded: no NOSCRIPT round in the count)
    sub = store.redis.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(keys.job_events(job_id))
    ran = commands(store.redis, lambda: store.set_stage(job_id, 1, "uploading", (4, 4)))
    assert (ran["evalsha"], ran["hgetall"], ran["hset"], ran["publish"]) == (1, 1, 1, 2)
    events: list[str] = []
    for _ in range(10):  # (the subscribe confirmation reads as None)
        if len(events) == 2:
            break
        if (message := sub.get_message(timeout=1)) is not None:
            events.append(json.loads(message["data"])["event"])
    assert events == ["progress", "stage"]
    record = store.get(job_id).record  # type: ignore[union-attr]
    assert record.progress is not None and (record.progress.step, record.progress.total) == (4, 4)


def test_the_uploading_stage_answers_a_cancel_request_when_it_carries_progress(store: JobStore) -> None:
    job_id = claimed(store)
    assert store.cancel(job_id) == "running"
    assert store.set_stage(job_id, 1, "running") == 1  # no progress: a stage write, as before
    assert store.set_stage(job_id, 1, "uploading", (4, 4)) == CANCEL_REQUESTED
    assert store.set_stage(job_id, 2, "uploading", (4, 4)) == 0  # fenced
