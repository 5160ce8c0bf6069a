"""Lifecycle costs in Redis: the per-job store path, and listing against a large keyspace.

- **per job**: the store calls one job makes from submit to ``succeeded`` (create, claim,
  two stage writes — each also the ownership check before puts — one progress write,
  succeed), timed against a real redis-server; median per job.  On a tree without stages
  the two stage writes are the two ``renew`` ownership checks they replace.
- **listing**: ``list_jobs`` pages (first page, a page deep behind a cursor, one status)
  with N jobs of the tenant and as many of another tenant in Redis; median per call.  The
  listing reads only the tenant's sorted sets, so it should not grow with the keyspace.

Usage: ``python -m benchmarks.lifecycle [--jobs 2000] [--listed 20000]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from hotpipe.devstack import find_redis_server, start_redis
from hotpipe.shared.checkpoints import Resolved
from hotpipe.shared.job import ImageResult, JobResult, Task, new_job_id
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.store import JobStore

RESULT = JobResult(images=[ImageResult(key="k", width=8, height=8, content_type="image/png", sha256="0" * 64)])
SPEC = JobSpec(resolved=Resolved("tiny-sd", "local", "tiny-sd", None, "StableDiffusionPipeline", "stable-diffusion",
                                  "StableDiffusionPipeline", "stable-diffusion"),
               task=Task.TEXT2IMAGE, params={"prompt": "a lighthouse", "num_inference_steps": 4, "seed": 1})


def create(store: JobStore, **options: Any) -> str:
    job_id = new_job_id()
    kwargs: dict[str, Any] = {}
    if options:
        from hotpipe.shared.store import JobOptions

        kwargs["options"] = JobOptions(**options)
    store.create(job_id, family="stable-diffusion", pipeline="StableDiffusionPipeline", checkpoint="tiny-sd",
                 revision=None, task=Task.TEXT2IMAGE, spec=SPEC, **kwargs)
    return job_id


def one_job(store: JobStore) -> float:
    start = time.perf_counter()
    job_id = create(store)
    job = store.claim_job(job_id)
    assert job is not None
    attempt = job.record.attempts
    stage = getattr(store, "set_stage", None)
    for name in ("running", "uploading"):
        ok = stage(job_id, attempt, name) if stage else store.renew(job_id, attempt)
        assert ok
    store.progress(job_id, attempt, 4, 4)
    store.succeed(job_id, attempt, RESULT)
    return time.perf_counter() - start


def per_job(store: JobStore, jobs: int) -> float:
    for _ in range(50):  # warm up: scripts loaded, connection open
        one_job(store)
    return statistics.median(one_job(store) for _ in range(jobs))


def listing(store: JobStore, listed: int) -> dict[str, float]:
    for tenant in ("a", "b"):
        for i in range(listed):
            job_id = create(store, tenant=tenant)
            if i % 2:
                store.cancel(job_id)
    first = [timed(lambda: store.list_jobs("a", None, 20)) for _ in range(200)]
    _, cursor = store.list_jobs("a", None, listed // 2)
    deep = [timed(lambda: store.list_jobs("a", None, 20, cursor)) for _ in range(200)]
    from hotpipe.shared.status import Status

    canceled = [timed(lambda: store.list_jobs("a", Status.CANCELED, 20)) for _ in range(200)]
    return {"first page": statistics.median(first), f"page after {listed // 2}": statistics.median(deep),
            "status=canceled": statistics.median(canceled)}


def timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--listed", type=int, default=0, help="jobs per tenant for the listing figures (0: skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp), find_redis_server("system"))
        try:
            store = JobStore(redis.Redis.from_url(url, decode_responses=True), record_ttl_s=600)
            print(f"per job (create .. succeeded, 6 store calls): {per_job(store, args.jobs) * 1e6:.0f} µs median")
            if args.listed:
                store.redis.flushdb()
                keyspace = 0
                for name, seconds in listing(store, args.listed).items():
                    keyspace = int(store.redis.dbsize())
                    print(f"list_jobs limit=20, {name}: {seconds * 1e6:.0f} µs median ({keyspace} keys in Redis)")
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
