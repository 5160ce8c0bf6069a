"""Fixtures of the shared package's tests: a job store and a run-message publisher on the session's redis."""

from __future__ import annotations

import functools

import pytest
import redis

from hotpipe.shared.messages import enqueue
from hotpipe.shared.reaper import Publish
from hotpipe.shared.store import JobStore


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    """A store on the session's redis (its database is flushed per test)."""
    return JobStore(redis_client, record_ttl_s=600)


@pytest.fixture
def publish(redis_client: redis.Redis) -> Publish:
    """Publishes run messages to the session's redis, as reapers and drains do."""
    return functools.partial(enqueue, redis_client)
