"""The fleet as the API sees it: what ``GET /v1/workers`` answers and the router the submit path uses."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import redis

from hotpipe.producer.routing import Router
from hotpipe.shared.popularity import Popularity
from hotpipe.shared.queues import queue_depths
from hotpipe.shared.registry import Registry
from hotpipe.shared.settings import Settings


def make_router(client: redis.Redis, settings: Settings) -> Router | None:
    """The affinity router for these settings; None when routing is family-queue-only."""
    if settings.routing != "affinity":
        return None
    return Router(Registry(client, settings.worker_ttl_s), settings.route_backlog_max, settings.route_claim_s,
                  popularity=Popularity(client, settings.popularity_half_life_s))


def fleet(registry: Registry) -> dict[str, Any]:
    """Every live worker's record, with the number of jobs waiting in its own queue."""
    workers = registry.live()
    backlog = queue_depths(registry.redis, [w.queue for w in workers]) if workers else {}
    out = []
    for w in workers:
        doc = asdict(w)
        doc["backlog"] = backlog.get(w.queue, 0)
        out.append(doc)
    return {"workers": out}

