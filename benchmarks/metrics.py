"""What metrics cost: per job in the worker, per request in the API, per scrape on both sides.

- worker: ``job_started`` + ``job_succeeded`` + ``job_finished`` in prometheus_client's
  multiprocess mode (files in a fresh directory, as in a running worker), cache stats included;
- API: one request through ``MetricsMiddleware`` vs. the same app without it (in-process ASGI);
- API scrape: ``QueueCollector`` over every family's ten priority lists and N running jobs on a
  real redis-server (two pipelined round trips);
- worker scrape: the parent merging the files of its children.

Usage: ``python -m benchmarks.metrics``.  Multiprocess mode switches prometheus_client for this
whole process, so this is a script of its own, not part of another benchmark.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks.lifecycle import SPEC
from hotpipe.devstack import find_redis_server, start_redis
from hotpipe.producer.metrics import ApiMetrics, MetricsMiddleware, QueueCollector
from hotpipe.producer.queues import QUEUED_FAMILIES
from hotpipe.shared.job import JobRecord, Task, new_job_id
from hotpipe.shared.status import Status
from hotpipe.shared.store import JobStore
from hotpipe.workers.cache import CacheStats
from hotpipe.workers.exporter import MetricsExporter
from hotpipe.workers.metrics import WorkerMetrics

TIMINGS = {"load": 0.0001, "inputs": 0.00001, "run": 0.09, "encode": 0.001, "upload": 0.007}


def median_us(fn: Callable[[], Any], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def worker_per_job(runs: int) -> tuple[float, float]:
    """(µs per job recorded, µs per scrape of the merged files) in multiprocess mode."""
    exporter = MetricsExporter(0, ["stable-diffusion"], "cpu", host="127.0.0.1")
    stats = CacheStats(hits=10, misses=1, evictions=0, load_seconds=2.0, resident_pipelines=1)
    metrics = WorkerMetrics(None, "cpu", cache_stats=lambda: stats)
    now = datetime.now(UTC)
    record = JobRecord(id=new_job_id(), status=Status.RUNNING, family="stable-diffusion",
                       pipeline="StableDiffusionPipeline", checkpoint="tiny-sd", task=Task.TEXT2IMAGE, attempts=1,
                       created_at=now - timedelta(seconds=0.004), started_at=now)

    def one_job() -> None:
        metrics.job_started()
        metrics.job_succeeded(record, TIMINGS)
        metrics.job_finished("stable-diffusion", "succeeded", 0.1)

    per_job = median_us(one_job, runs)
    scrape = median_us(lambda: generate_latest(exporter.registry), max(runs // 10, 20))
    exporter.close()
    return per_job, scrape


def api_per_request(runs: int) -> tuple[float, float]:
    """(µs per request without, with the middleware) on a bare ASGI app answering 200."""

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def noop_send(message: Any) -> None:
        return None

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    wrapped = MetricsMiddleware(bare, ApiMetrics(CollectorRegistry()))
    scope = {"type": "http", "method": "GET", "path": "/v1/jobs/0123456789abcdef0123456789abcdef"}
    loop = asyncio.new_event_loop()
    try:
        plain = median_us(lambda: loop.run_until_complete(bare(scope, receive, noop_send)), runs)
        timed = median_us(lambda: loop.run_until_complete(wrapped(scope, receive, noop_send)), runs)
    finally:
        loop.close()
    return plain, timed


def api_scrape(client: redis.Redis, running: int, runs: int) -> float:
    """ms per collection of every family's queue figures with ``running`` jobs running."""
    client.flushdb()
    store = JobStore(client, record_ttl_s=60)
    for i in range(running):
        job_id = new_job_id()
        store.create(job_id, family=QUEUED_FAMILIES[i % len(QUEUED_FAMILIES)], pipeline="P", checkpoint="c",
                     revision=None, task=Task.TEXT2IMAGE, spec=SPEC)
        store.claim_job(job_id)
    collector = QueueCollector(client)
    return median_us(lambda: list(collector.collect()), runs) / 1000


def main() -> None:
    per_job, worker_scrape = worker_per_job(5000)
    plain, timed = api_per_request(5000)
    print(f"worker: recording one job {per_job:.1f} µs; one scrape of the merged files {worker_scrape:.0f} µs")
    print(f"API: a request {plain:.1f} µs bare, {timed:.1f} µs through the metrics middleware "
          f"(+{timed - plain:.1f} µs)")
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp), find_redis_server("system"))
        try:
            client = redis.Redis.from_url(url, decode_responses=True)
            for running in (0, 100, 1000):
                ms = api_scrape(client, running, 100)
                print(f"API scrape: {len(QUEUED_FAMILIES)} families x 10 lists, {running} running jobs: {ms:.2f} ms")
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
