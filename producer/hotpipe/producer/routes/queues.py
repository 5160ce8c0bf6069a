"""``GET /v1/queues/{family}``: what the autoscaler reads (counted by ``hotpipe.shared.queues``)."""

from __future__ import annotations

import redis
from fastapi import FastAPI

from hotpipe.producer.queues import QueueState, queued_family
from hotpipe.shared.queues import backlog


def add_queue_routes(app: FastAPI, client: redis.Redis) -> None:
    """The per-family queue route, counting in ``client``."""

    @app.get("/v1/queues/{family}", response_model=QueueState)
    def queue_state(family: str) -> QueueState:
        """Jobs queued (all priorities) and running for one family; what the autoscaler reads."""
        counts = backlog(client, [queued_family(family)])
        return QueueState(family=family, queued=counts.queued[family], running=counts.running[family])
