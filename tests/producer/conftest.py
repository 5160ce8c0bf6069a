"""The API in-process (FastAPI's TestClient) over the session's real redis-server and S3 server.

A submit pushes its run message onto the real redis, so what a request enqueued is read back from the
broker's lists, and what it recorded from the job hashes: a refused request must leave
both untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest
import redis
from fastapi.testclient import TestClient

from hotpipe.devstack import LOCAL_AWS_ENV
from hotpipe.producer.api import Services, create_app
from hotpipe.shared import keys
from hotpipe.shared.queues import family_queue
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage

FAMILY = "stable-diffusion"
#: kombu's redis transport keeps a queue's messages in a list named after the queue; messages
#: with a priority go to ``{queue}\x06\x16{priority}`` (kombu's separator, priorities 0-9)
PRIORITY_SEP = "\x06\x16"


class Backlog(NamedTuple):
    """What the API left behind: messages on the family's queue, job records in redis."""

    queued: int
    records: int


def queue_lists(family: str = FAMILY) -> list[str]:
    """Every redis list that can hold a message of ``family``'s Celery queue, named explicitly."""
    queue = family_queue(family)
    return [queue] + [f"{queue}{PRIORITY_SEP}{priority}" for priority in range(1, 10)]


def backlog_of(client: redis.Redis) -> Backlog:
    queued = sum(int(client.llen(name)) for name in queue_lists())
    # SCAN is fine here: the test database is small and flushed before each test.
    records = sum(1 for _ in client.scan_iter(match=keys.job("*"), count=1000))
    return Backlog(queued, records)


@pytest.fixture
def backlog(redis_client: redis.Redis) -> Callable[[], Backlog]:
    """Call it to read what has been enqueued and recorded so far (the db starts empty)."""
    return lambda: backlog_of(redis_client)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loopback S3 server accepts any credentials; the API takes boto3's usual chain."""
    for name, value in LOCAL_AWS_ENV.items():
        if name not in os.environ:
            monkeypatch.setenv(name, value)


@pytest.fixture
def make_api(redis_client: redis.Redis, storage: Storage, aws_credentials: None) -> Iterator[Callable[[Settings],
                                                                                                   TestClient]]:
    """Build API clients for given settings; the redis db is flushed and the bucket exists."""
    made: list[TestClient] = []

    def make(settings: Settings) -> TestClient:
        client = TestClient(create_app(settings))
        client.__enter__()  # runs the lifespan: the API's asyncio Redis client lives in its loop
        made.append(client)
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        services.redis.close()


@pytest.fixture
def api(make_api: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    """The API over the session's redis-server and S3 server."""
    return make_api(settings)
