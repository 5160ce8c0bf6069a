"""The API's long-polls share one subscriber connection (``job_watch.py``), against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from hotpipe.shared import keys
from hotpipe.shared.job import JobRecord
from hotpipe.shared.status import Status
from hotpipe.shared.store import AsyncJobReader, JobStore
from tests.jobs import claim
from tests.shared.test_store import RESULT, create


def on_a_reader(store: JobStore, body: Callable[[AsyncJobReader], Awaitable[Any]]) -> Any:
    """Run ``body`` with an AsyncJobReader on its own event loop and asyncio client of the same server."""

    async def go() -> Any:
        kw = store.redis.connection_pool.connection_kwargs
        reader = AsyncJobReader(aioredis.Redis(host=kw["host"], port=kw["port"], db=kw.get("db", 0),
                                               decode_responses=True))
        try:
            return await body(reader)
        finally:
            await reader.aclose()

    return asyncio.run(go())


def subscribers(client: redis.Redis, job_id: str) -> int:
    return int(client.pubsub_numsub(keys.job_events(job_id))[0][1])


def pubsub_connections(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if int(c.get("sub", 0)) > 0 or "P" in c.get("flags", ""))


async def until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.01)


def finished(store: JobStore, job_id: str, attempt: int) -> None:
    store.succeed(job_id, attempt, RESULT)


def test_waits_on_many_jobs_share_one_connection_and_leave_no_subscription(store: JobStore) -> None:
    jobs = [create(store) for _ in range(5)]
    attempts = {job_id: claim(store, job_id) for job_id in jobs}

    async def body(reader: AsyncJobReader) -> list[JobRecord | None]:
        waits = [asyncio.create_task(reader.wait(job_id, 30)) for job_id in jobs for _ in range(2)]  # two each
        await until(lambda: all(subscribers(store.redis, j) == 1 for j in jobs))
        assert pubsub_connections(store.redis) == 1
        for job_id, attempt in attempts.items():
            finished(store, job_id, attempt)  # type: ignore[arg-type]
        return list(await asyncio.gather(*waits))

    records = on_a_reader(store, body)
    assert [r.status if r else None for r in records] == [Status.SUCCEEDED] * 10
    assert all(subscribers(store.redis, j) == 0 for j in jobs)


def test_a_waiter_whose_connection_is_killed_still_gets_the_result(store: JobStore) -> None:
    job_id = create(store)
    attempt = claim(store, job_id)
    assert attempt is not None

    async def body(reader: AsyncJobReader) -> JobRecord | None:
        waiting = asyncio.create_task(reader.wait(job_id, 30))
        await until(lambda: subscribers(store.redis, job_id) == 1)
        assert store.redis.client_kill_filter(_type="pubsub") == 1
        finished(store, job_id, attempt)  # published while nobody listens: the waiter must read it back
        return await waiting

    record = on_a_reader(store, body)
    assert record is not None and record.status is Status.SUCCEEDED


def test_admit_sees_the_first_read_before_any_wait(store: JobStore) -> None:
    job_id = create(store)

    def refuse(record: JobRecord | None) -> None:
        assert record is not None and record.status is Status.QUEUED
        raise PermissionError("not yours")

    with pytest.raises(PermissionError):
        on_a_reader(store, lambda reader: reader.wait(job_id, 30, admit=refuse))
    assert subscribers(store.redis, job_id) == 0


def test_waiting_on_an_unknown_job_returns_none_at_once(store: JobStore) -> None:
    assert on_a_reader(store, lambda reader: reader.wait("0" * 32, 30)) is None
