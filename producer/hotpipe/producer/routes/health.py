"""``GET /healthz`` (the process is up) and ``GET /readyz`` (and Redis answers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:
    from hotpipe.producer.api import Services


def add_health_routes(app: FastAPI, svc: Services) -> None:
    """Liveness and readiness probes."""

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        """Redis answers; 503 otherwise (with Sentinel: also while the sentinels know no primary, mid-failover)."""
        svc.redis.ping()
        return {"status": "ready"}
