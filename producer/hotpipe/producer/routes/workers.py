"""``GET /v1/workers``: the live fleet (``fleet.fleet`` reads it from the registry)."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import FastAPI

from hotpipe.producer.fleet import fleet
from hotpipe.shared.registry import Registry
from hotpipe.shared.settings import Settings


def add_worker_routes(app: FastAPI, client: redis.Redis, settings: Settings) -> None:
    """The fleet route, over the worker registry in ``client``."""
    registry = Registry(client, settings.worker_ttl_s)

    @app.get("/v1/workers")
    def list_workers() -> dict[str, Any]:
        """Live workers: families, device, hot and loading checkpoints, current job, cache stats."""
        return fleet(registry)
