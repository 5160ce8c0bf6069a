"""Admission control before anything is written: per-tenant rate limit, bounded queues.

The rate limit is a token bucket per tenant, kept in Redis and changed by one Lua script
on Redis's clock, so every API replica shares it and no host's clock matters.  Reads (a
job, the list, an event stream) may have a bucket of their own (``ReadLimit``), with its
own, larger budget, so polling never spends a tenant's submissions.  The queue
bound counts the family's ``queued`` jobs: one GET of the count the store's scripts keep with
every status change (``keys.queued_count``), where counting the queue's messages would read every
priority list of the family queue and of each live worker's own queue (``queues.py``, which
``/v1/queues`` and the autoscaler still read: they count messages, exactly); concurrent
submissions may overshoot it by at most the number in flight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

from hotpipe.shared import keys, scripts
from hotpipe.shared.errors import TooManyRequests
from hotpipe.shared.settings import Settings

#: what a caller told "queue full" should wait before trying again
QUEUE_FULL_RETRY_AFTER_S = 5

@dataclass
class Admission:
    """Says no (429 with Retry-After) before a submission writes anything."""

    client: redis.Redis
    rate_per_s: float
    burst: int
    max_queued: int

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> Admission:
        return cls(client, settings.rate_limit_per_s, settings.rate_limit_burst, settings.max_queued_per_family)

    def __post_init__(self) -> None:
        self._take = scripts.register(self.client, "rate_take")

    def take_token(self, tenant: str) -> None:
        """One submission of ``tenant``; raises ``TooManyRequests`` (rate_limited) when over its rate."""
        if self.rate_per_s <= 0:
            return
        wait_ms = int(self._take(keys=[keys.rate_bucket(tenant)], args=[self.rate_per_s, self.burst]))
        if wait_ms > 0:
            raise TooManyRequests(f"tenant {tenant!r} is over its rate limit of {self.rate_per_s:g} submissions "
                                  f"per second (burst {self.burst}); retry after the Retry-After header's seconds",
                                  retry_after_s=math.ceil(wait_ms / 1000), code="rate_limited")

    def waiting(self, family: str) -> int:
        """``family``'s jobs waiting: those ``queued`` (the count the store's scripts keep)."""
        return max(0, int(self.client.get(keys.queued_count(family)) or 0))

    def check_queue(self, family: str) -> None:
        """Raises ``TooManyRequests`` (queue_full) when ``family``'s queue holds ``max_queued`` messages."""
        if self.max_queued <= 0:
            return
        waiting = self.waiting(family)
        if waiting >= self.max_queued:
            raise TooManyRequests(f"the {family} queue is full ({waiting} jobs waiting, at most "
                                  f"{self.max_queued}); retry later", retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
                                  code="queue_full")


@dataclass
class ReadLimit:
    """A tenant's reads (GET a job, the job list, an event stream): the same token bucket as
    submissions, in a bucket of its own with its own budget; off when ``rate_per_s`` is 0."""

    client: redis.Redis
    rate_per_s: float
    burst: int

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> ReadLimit:
        return cls(client, settings.read_rate_limit_per_s, settings.read_rate_limit_burst)

    def __post_init__(self) -> None:
        self._take = scripts.register(self.client, "rate_take")

    def take_token(self, tenant: str) -> None:
        """One read of ``tenant``; raises ``TooManyRequests`` (rate_limited) when over its read rate."""
        if self.rate_per_s <= 0:
            return
        wait_ms = int(self._take(keys=[keys.read_rate_bucket(tenant)], args=[self.rate_per_s, self.burst]))
        if wait_ms > 0:
            raise TooManyRequests(f"tenant {tenant!r} is over its read limit of {self.rate_per_s:g} reads per "
                                  f"second (burst {self.burst}); poll less often (GET with ?wait=S, or follow "
                                  "the job's events) and retry after the Retry-After header's seconds",
                                  retry_after_s=math.ceil(wait_ms / 1000), code="rate_limited")
