"""Serving the API: one process, or several uvicorn worker processes sharing one port.

The API is stateless (Redis holds every job), so it scales out with replicas; inside one
replica, ``api_workers`` processes put more than one core behind the port, because one
Python process serves one request's Python at a time.  Each worker process builds its own
app from the same settings (handed down as ``HOTPIPE_*`` variables) with its own Redis
pool and webhook dispatcher (the outbox's leases let any number run).  Their Prometheus
counters go to files in one directory (prometheus_client's multiprocess mode) and
``/metrics``, whichever process answers, merges them.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn
from fastapi import FastAPI

from hotpipe.producer.api import create_app
from hotpipe.producer.metrics import MULTIPROC_ENV
from hotpipe.shared.logs import configure_logging
from hotpipe.shared.settings import Settings


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the API on ``host:port`` until stopped (SIGINT/SIGTERM), in ``settings.api_workers`` processes."""
    options = {"host": host, "port": port, "log_level": settings.api_log_level.lower(), "access_log": False,
               # log_config=None: uvicorn's own lines go through our handler (text or JSON)
               "log_config": None}
    if settings.api_workers == 1:
        configure_logging(settings.log_format, settings.api_log_level.upper())
        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
        return
    metrics_dir = tempfile.mkdtemp(prefix="hotpipe-api-metrics-")
    os.environ.update(settings.to_env())  # the worker processes rebuild these settings from it
    os.environ[MULTIPROC_ENV] = metrics_dir  # before they import prometheus_client
    configure_logging(settings.log_format, settings.api_log_level.upper())
    try:
        uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=settings.api_workers,
                    **options)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def app_from_env() -> FastAPI:
    """The app of one worker process: settings from its environment (set by ``serve``)."""
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.api_log_level.upper())
    return create_app(settings)
