"""Load: N jobs from C concurrent clients to W workers; nothing lost, nothing done twice.

One run, one local stack (real redis-server, moto S3 with versioning on, the API — one or
several processes — and W Celery prefork workers), tiny SD, 1 step, 32x32.  The N jobs go
in R rounds (default 5), and each round measures both rates side by side, so the drift of a
shared machine hits both alike:

1. **raw enqueue**: C threads ``send_task`` N/R messages with hotpipe's own Celery settings
   to a queue no worker reads (the ceiling for putting work on Redis from Python);
2. **submission**: C clients ``POST /v1/jobs`` the next N/R jobs over HTTP (validation,
   resolution, routing, record and message in one script).  The clients are ``lean``
   (stdlib ``http.client``, one keep-alive connection per client thread: a load generator
   that costs the 2-core host ~0.5 ms of CPU a request, as ``wrk``/``hey`` would) or
   ``sdk`` (the project's ``Client`` on httpx, ~2.5-3 ms of CPU a request, taken from the
   same cores the API runs on).

The workers consume from the first round on (unless ``--workers-after``: they start once
every job is submitted), so from round 2 both rates are measured while they are busy.  Then
it waits until every job is terminal and counts: jobs not terminal (lost), jobs whose image
was written more than once (object versions in S3), queue latency (``started_at -
created_at`` of the last attempt) percentiles.

Usage: ``python -m benchmarks.load [--jobs 2000 --clients 20 --workers 2 --api-workers 2 --client lean]``.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.celery_app import TASK_NAME, make_celery
from hotpipe.shared.queues import priority_lists
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore

PARAMS: dict[str, Any] = {"prompt": "a lighthouse", "num_inference_steps": 1, "height": 32, "width": 32}
RAW_QUEUE = "bench-raw-enqueue"
WORKER_ENV = {"HOTPIPE_TORCH_THREADS": "1", "HOTPIPE_PROGRESS_INTERVAL_S": "1"}


@dataclass
class LoadReport:
    jobs: int
    clients: int
    raw_per_s: float  # over all rounds
    submit_per_s: float  # over all rounds
    round_ratios: list[float]  # submissions / raw, round by round
    drain_s: float
    client: str = "lean"
    api_workers: int = 1
    statuses: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)  # not terminal (or missing) at the end
    succeeded_without_image: list[str] = field(default_factory=list)
    written_twice: list[str] = field(default_factory=list)  # an image put more than once
    queue_latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.submit_per_s / self.raw_per_s

    def lines(self) -> list[str]:
        q = self.queue_latency_ms
        return [
            f"jobs {self.jobs}, {self.clients} {self.client} clients, {self.api_workers} API process(es): "
            f"statuses {self.statuses}",
            f"lost (not terminal) {len(self.lost)}, completed twice {len(self.written_twice)}",
            f"raw Celery send_task      {self.raw_per_s:8.1f} /s",
            f"POST /v1/jobs submissions {self.submit_per_s:8.1f} /s  = {self.ratio:.0%} of raw "
            f"(rounds: {', '.join(f'{r:.0%}' for r in self.round_ratios)})",
            f"queue latency p50 {q['p50']:.0f} ms, p95 {q['p95']:.0f} ms, p99 {q['p99']:.0f} ms, max {q['max']:.0f} ms",
            f"all terminal {self.drain_s:.1f} s after the first submission",
        ]


def in_threads(n: int, clients: int, work: Callable[[int], Any]) -> tuple[list[Any], float]:
    """Run ``work(i)`` for i in range(n) on ``clients`` threads; (results, seconds)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(work, range(n)))
    return results, time.perf_counter() - start


def raw_enqueue(app: Celery, n: int, clients: int) -> float:
    """Messages per second ``clients`` threads put on Redis with Celery's ``send_task`` (``app``
    already warm: connections and the queue's declaration are not timed)."""
    _, took = in_threads(n, clients, lambda i: app.send_task(TASK_NAME, args=[f"raw-{i}"], queue=RAW_QUEUE,
                                                             ignore_result=True, priority=4))
    return n / took


def request(i: int) -> dict[str, Any]:
    return {"checkpoint": "tiny-sd", "task": "text2image", "params": {**PARAMS, "seed": i}}


def sdk_submitter(api_url: str) -> Callable[[int], str]:
    """Submits through the SDK, one ``Client`` per thread."""
    local = threading.local()

    def submit(i: int) -> str:
        if not hasattr(local, "client"):
            local.client = Client(api_url, timeout_s=120)
        return local.client.submit(request(i)).id

    return submit


def lean_submitter(api_url: str) -> Callable[[int], str]:
    """Submits with stdlib ``http.client``, one keep-alive connection per thread."""
    url = urlsplit(api_url)
    local = threading.local()

    def submit(i: int) -> str:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=120)
        local.conn.request("POST", "/v1/jobs", json.dumps(request(i)).encode(), {"Content-Type": "application/json"})
        response = local.conn.getresponse()
        body = response.read()
        if response.status != 202:
            raise RuntimeError(f"submit answered {response.status}: {body[:200]!r}")
        return str(json.loads(body)["id"])

    return submit


SUBMITTERS: dict[str, Callable[[str], Callable[[int], str]]] = {"lean": lean_submitter, "sdk": sdk_submitter}


@dataclass
class Rates:
    """Both rates, round by round."""

    raw_s: list[float] = field(default_factory=list)  # seconds each round's raw enqueue took
    submit_s: list[float] = field(default_factory=list)  # seconds each round's submissions took
    sizes: list[int] = field(default_factory=list)

    def per_s(self, took: list[float]) -> float:
        return sum(self.sizes) / sum(took)


def measure(stack: LocalStack, n: int, clients: int, rounds: int, client: str) -> tuple[list[str], Rates]:
    """``rounds`` of (raw enqueue, submissions) of n/rounds each; the submitted job ids."""
    submit = SUBMITTERS[client](stack.api_url)
    ids: list[str] = []
    rates = Rates()
    app = make_celery(stack.settings)
    try:
        raw_enqueue(app, 4 * clients, clients)  # warm: producer pool connections, queue declared
        for r in range(rounds):
            size = n // rounds + (1 if r < n % rounds else 0)
            rates.raw_s.append(size / raw_enqueue(app, size, clients))
            done, took = in_threads(size, clients, functools.partial(lambda first, i: submit(first + i), len(ids)))
            ids += done
            rates.submit_s.append(took)
            rates.sizes.append(size)
    finally:
        redis.Redis.from_url(stack.settings.redis_url).delete(*priority_lists(RAW_QUEUE))
        app.close()
    return ids, rates


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def image_puts(storage: Storage, ids: list[str]) -> dict[str, int]:
    """Image key -> versions (puts), for the images of ``ids``."""
    wanted = {storage.image_key(job_id, 0, "png") for job_id in ids}
    counts: dict[str, int] = {}
    pages = storage.client.get_paginator("list_object_versions").paginate(Bucket=storage.bucket,
                                                                          Prefix=storage.prefix + "/")
    for page in pages:
        for version in page.get("Versions", []):
            if version["Key"] in wanted:
                counts[version["Key"]] = counts.get(version["Key"], 0) + 1
    return counts


def wait_terminal(store: JobStore, ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        pending = [i for i in pending if not ((j := store.get(i)) and j.record.status.is_terminal())]
        if pending:
            time.sleep(0.5)


def run_load(stack: LocalStack, jobs: int, clients: int, timeout_s: float = 1800,
             start_workers: Callable[[], object] | None = None, client: str = "lean", rounds: int = 5) -> LoadReport:
    """The scenario on a running stack (versioning is turned on here), submitting with ``client``
    (``SUBMITTERS``); ``start_workers``, when given, is called once every job is submitted."""
    storage = stack.storage()
    storage.client.put_bucket_versioning(Bucket=storage.bucket, VersioningConfiguration={"Status": "Enabled"})
    store = JobStore(redis.Redis.from_url(stack.settings.redis_url, decode_responses=True), 3600)
    start = time.perf_counter()
    ids, rates = measure(stack, jobs, clients, rounds, client)
    if start_workers is not None:
        start_workers()
    wait_terminal(store, ids, timeout_s)
    report = LoadReport(jobs, clients, rates.per_s(rates.raw_s), rates.per_s(rates.submit_s),
                        [raw / sub for raw, sub in zip(rates.raw_s, rates.submit_s, strict=True)],
                        time.perf_counter() - start, client=client,
                        api_workers=int(stack.extra_env.get("HOTPIPE_API_WORKERS", "1")))
    latencies: list[float] = []
    for job_id in ids:
        found = store.get(job_id)
        status = found.record.status.value if found else "missing"
        report.statuses[status] = report.statuses.get(status, 0) + 1
        if found is None or not found.record.status.is_terminal():
            report.lost.append(job_id)
        elif found.record.started_at is not None:
            latencies.append((found.record.started_at - found.record.created_at).total_seconds() * 1000)
    puts = image_puts(storage, ids)
    report.written_twice = [key for key, n in puts.items() if n > 1]
    report.succeeded_without_image = [i for i in ids if (j := store.get(i)) and j.record.status.value == "succeeded"
                                      and puts.get(storage.image_key(i, 0, "png"), 0) == 0]
    if latencies:
        report.queue_latency_ms = {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
                                   "p99": percentile(latencies, 0.99), "max": max(latencies),
                                   "mean": statistics.fmean(latencies)}
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workers-after", action="store_true", help="start the workers once every job is submitted")
    p.add_argument("--api-workers", type=int, default=2, help="processes serving the API (HOTPIPE_API_WORKERS)")
    p.add_argument("--client", choices=sorted(SUBMITTERS), default="lean", help="how the clients submit")
    p.add_argument("--rounds", type=int, default=5, help="rounds of (raw enqueue, submissions)")
    args = p.parse_args()
    from hotpipe.workers.dev_checkpoints import make_checkpoints

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        make_checkpoints(models, ["tiny-sd"])
        with LocalStack(Path(tmp) / "stack", models, redis_binary=find_redis_server("system"), workers=0,
                        extra_env={**WORKER_ENV, "HOTPIPE_API_WORKERS": str(args.api_workers)}) as stack:
            workers: dict[str, dict[str, str]] = {f"worker{i}": {} for i in range(args.workers)}
            if not args.workers_after:
                stack.start_workers(workers)
            report = run_load(stack, args.jobs, args.clients, client=args.client, rounds=args.rounds,
                              start_workers=(lambda: stack.start_workers(workers)) if args.workers_after else None)
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
