"""Prometheus metrics of the API, served on its own ``GET /metrics``.

Counted in the process: jobs submitted (by family and priority), HTTP requests and their
latency (by method, route template and status).  Read from Redis at scrape time, by a
collector: each family's backlog (``shared/hotpipe/shared/queues.py``: every priority list of its
queue and of its live workers' own queues), and the jobs running (the lease set, which holds
exactly the running jobs) by family.  The queue figures
are the same from every API replica: aggregate them with ``max``, not ``sum``.

Each app has its own registry, so several apps in one process (tests) don't collide.  When
the API runs as several worker processes (``producer/hotpipe/producer/serve.py``), the counters live in files
in ``PROMETHEUS_MULTIPROC_DIR`` and every scrape merges all the processes' counts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import redis
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hotpipe.producer.queues import QUEUED_FAMILIES
from hotpipe.shared.job import JOB_ID_RE
from hotpipe.shared.logs import JOB_ID
from hotpipe.shared.queues import backlog

#: seconds; the API answers in milliseconds, except long-polls and event streams (time to first byte)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: where prometheus_client keeps the counters of several API processes (set by ``serve``; read when
#: prometheus_client is first imported, so it must be set before the worker processes start)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: the route label of requests no route matched (keeps the label set bounded)
UNMATCHED = "unmatched"


@dataclass
class ApiMetrics:
    """The API's own counters, on ``registry``."""

    registry: CollectorRegistry

    def __post_init__(self) -> None:
        r = self.registry
        self.submitted = Counter("hotpipe_jobs_submitted", "Jobs accepted (recorded and enqueued) by the API.",
                                 ["family", "priority"], registry=r)
        self.requests = Counter("hotpipe_http_requests", "HTTP requests answered by the API.",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("hotpipe_http_request_duration_seconds",
                                 "Seconds from request to the response's first byte.",
                                 ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=r)

    def job_submitted(self, family: str, priority: int) -> None:
        self.submitted.labels(family, str(priority)).inc()

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)


class QueueCollector(Collector):
    """Queue depth and running jobs per family, read from Redis when Prometheus scrapes.

    Pipelined round trips (``shared/hotpipe/shared/queues.py`` ``backlog``: the count
    ``GET /v1/queues/{family}`` serves).  A Redis outage yields
    ``hotpipe_redis_up 0`` and no queue figures, never a failed scrape.
    """

    def __init__(self, client: redis.Redis, families: Iterable[str] = QUEUED_FAMILIES):
        self.client = client
        self.families = tuple(families)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self.empty_families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth, running, up = self.empty_families()
        try:
            counts = backlog(self.client, self.families)
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        for family in self.families:
            depth.add_metric([family], counts.queued[family])
            running.add_metric([family], counts.running[family])
        for family in sorted(set(counts.running) - set(self.families)):
            running.add_metric([family], counts.running[family])
        up.add_metric([], 1)
        yield from (depth, running, up)

    @staticmethod
    def empty_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        """The three metric families, without samples."""
        return (GaugeMetricFamily("hotpipe_queue_depth", "Jobs waiting in the family's queue, all priority lists.",
                                  labels=["family"]),
                GaugeMetricFamily("hotpipe_jobs_running", "Jobs running (holding a lease), by family.",
                                  labels=["family"]),
                GaugeMetricFamily("hotpipe_redis_up", "1 if the API's last read of the queues from Redis worked."))


class MetricsMiddleware:
    """Counts every HTTP request by method, route template and status, and times it to the first byte.

    Requests about one job (``/v1/jobs/{id}...``) also set the job id for log lines.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: list[int] = []

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                self.metrics.request_done(scope["method"], route_of(scope), message["status"],
                                          time.perf_counter() - start)
            await send(message)

        token = JOB_ID.set(job_id_of(scope["path"]))
        try:
            await self.app(scope, receive, timed)
        except BaseException:
            if not status:  # no answer went out: count it as the 500 the server sends
                self.metrics.request_done(scope["method"], route_of(scope), 500, time.perf_counter() - start)
            raise
        finally:
            JOB_ID.reset(token)


def route_of(scope: Scope) -> str:
    """The matched route's path template (``/v1/jobs/{job_id}``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def job_id_of(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) >= 4 and parts[1:3] == ["v1", "jobs"] and JOB_ID_RE.match(parts[3]):
        return parts[3]
    return None


def install_metrics(app: FastAPI, client: redis.Redis) -> ApiMetrics:
    """Add the request middleware and ``GET /metrics`` to ``app``; returns the counters to update."""
    metrics = ApiMetrics(CollectorRegistry())
    shared_dir = os.environ.get(MULTIPROC_ENV)
    if shared_dir:  # several API processes: serve every process's counters, merged
        served = CollectorRegistry()
        multiprocess.MultiProcessCollector(served, shared_dir)
    else:  # one process: its own counters, and its resource use
        served = metrics.registry
        ProcessCollector(registry=served)
    PlatformCollector(registry=served)
    served.register(QueueCollector(client))
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        """Prometheus text exposition of the API's metrics."""
        return Response(generate_latest(served), media_type=CONTENT_TYPE_LATEST)

    return metrics
