"""Warm routing: affinity vs family-queue-only, measured in one run on the same request mix.

12 tiny checkpoints (tiny-sd built with 12 seeds), requests drawn from a Zipf distribution
(exponent 1.1, fixed seed), submitted through the real API with some concurrency to 2
real workers whose caches hold at most 4 pipelines each.  Each mode gets a fresh stack
(fresh caches) and the very same request sequence.  Reported per mode: the cache hit rate
(hits / (hits + misses), from the workers' own counters in ``GET /v1/workers``), jobs/s,
and the ceiling — the share of requests whose checkpoint is among the 8 most requested,
which no placement of 2 x 4 pipelines can beat.  Target: affinity ≥ 95% of the ceiling,
clearly above family-queue-only.

Usage: ``python -m benchmarks.affinity [--jobs 300] [--concurrency 4] [--modes affinity,affinity:lfu,family:lru]``
(a mode is routing[:eviction policy]; without a policy, the default ``HOTPIPE_CACHE_POLICY``).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.status import Status
from hotpipe.workers.dev_checkpoints import make_checkpoints

CHECKPOINTS, EXPONENT, SLOTS, WORKERS = 12, 1.1, 4, 2
PARAMS: dict[str, Any] = {"prompt": "a lighthouse", "num_inference_steps": 2, "height": 32, "width": 32}


def build_models(root: Path) -> list[str]:
    """12 distinct tiny checkpoints (tiny-sd with 12 seeds), named ckpt-00 .. ckpt-11."""
    names = []
    for i in range(CHECKPOINTS):
        name = f"ckpt-{i:02d}"
        if not (root / name / "model_index.json").is_file():
            built = make_checkpoints(root / f".build-{i}", ["tiny-sd"], seed=i)[0]
            shutil.move(str(built), root / name)
            shutil.rmtree(root / f".build-{i}")
        names.append(name)
    return names


def zipf_requests(names: list[str], n: int, seed: int) -> list[str]:
    weights = [(rank + 1) ** -EXPONENT for rank in range(len(names))]
    return random.Random(seed).choices(names, weights=weights, k=n)


def ceiling(requests: list[str], slots: int) -> float:
    """Share of requests whose checkpoint is among the ``slots`` most requested."""
    top = {name for name, _ in Counter(requests).most_common(slots)}
    return sum(r in top for r in requests) / len(requests)


@dataclass
class Outcome:
    mode: str
    hits: int
    misses: int
    jobs_per_s: float
    per_worker: dict[str, list[str]]

    @property
    def hit_rate(self) -> float:
        return self.hits / max(1, self.hits + self.misses)


def run_mode(mode: str, models: Path, workdir: Path, requests: list[str], concurrency: int,
             backlog_max: int) -> Outcome:
    routing, _, policy = mode.partition(":")
    env = {"HOTPIPE_ROUTING": routing, "HOTPIPE_CACHE_MAX_PIPELINES": str(SLOTS), "HOTPIPE_TORCH_THREADS": "1",
           "HOTPIPE_ROUTE_BACKLOG_MAX": str(backlog_max)}
    if policy:  # else the default HOTPIPE_CACHE_POLICY
        env["HOTPIPE_CACHE_POLICY"] = policy
    with LocalStack(workdir, models, redis_binary=find_redis_server("system"), workers=0, extra_env=env) as stack:
        stack.start_workers({f"w{i}": {} for i in range(WORKERS)})
        with Client(stack.api_url) as client:
            def one(job: tuple[int, str]) -> None:
                seed, checkpoint = job
                record = client.submit({"checkpoint": checkpoint, "task": "text2image",
                                        "params": {**PARAMS, "seed": seed}})
                done = client.wait(record.id, timeout_s=600)
                assert done.status is Status.SUCCEEDED, done.error

            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(one, enumerate(requests)))
            took = time.perf_counter() - start
            workers = counted(client, len(requests))
    hits = sum(w["stats"]["hits"] for w in workers)
    misses = sum(w["stats"]["misses"] for w in workers)
    return Outcome(mode, hits, misses, len(requests) / took,
                   {w["name"]: sorted(w["stats"]["checkpoints"]) for w in workers})


def cache_uses(worker: dict[str, Any]) -> int:
    """How many jobs a worker's checkpoint counters cover (a hit or a miss each)."""
    return int(worker["stats"]["hits"] + worker["stats"]["misses"])


def counted(client: Client, n: int, timeout_s: float = 30.0,
            uses: Callable[[dict[str, Any]], int] = cache_uses) -> list[dict[str, Any]]:
    """The workers' records once their counters (``uses`` of each) cover all ``n`` jobs (a worker publishes
    its stats right after the job's terminal write, so the last one may lag the client a little)."""
    deadline = time.monotonic() + timeout_s
    while True:
        workers = client.workers()
        if sum(uses(w) for w in workers) >= n or time.monotonic() > deadline:
            return workers
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modes", default="affinity,affinity:lfu,family:lru",
                    help="routing[:policy] items; routing affinity|family, policy popular|lfu|lru (none: the "
                         "default HOTPIPE_CACHE_POLICY)")
    ap.add_argument("--backlog-max", type=int,
                    help="HOTPIPE_ROUTE_BACKLOG_MAX (default: --concurrency, so a holder is never skipped only "
                         "because every other request in flight waits for it)")
    ap.add_argument("--workdir", help="keep models and service logs here (default: a temporary folder)")
    args = ap.parse_args()
    with (contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory()) as tmp:
        models = Path(tmp) / "models"
        models.mkdir(parents=True, exist_ok=True)
        requests = zipf_requests(build_models(models), args.jobs, args.seed)
        best = ceiling(requests, WORKERS * SLOTS)
        backlog_max = args.backlog_max or args.concurrency
        outcomes = []
        for mode in args.modes.split(","):
            outcomes.append(run_mode(mode, models, Path(tmp) / mode.replace(":", "-"), requests, args.concurrency,
                                     backlog_max))
            print(f"{mode}: {outcomes[-1]}", flush=True)
    print(f"{args.jobs} jobs, {CHECKPOINTS} checkpoints, Zipf {EXPONENT} (seed {args.seed}), concurrency "
          f"{args.concurrency}, {WORKERS} workers x {SLOTS} pipelines, route backlog bound {backlog_max}; "
          f"ceiling (top-8 share) {best:.1%}")
    print(f"{'mode':<14} {'hits':>5} {'misses':>6} {'hit rate':>9} {'of ceiling':>11} {'jobs/s':>7}")
    for o in outcomes:
        print(f"{o.mode:<14} {o.hits:>5} {o.misses:>6} {o.hit_rate:>9.1%} {o.hit_rate / best:>11.1%} "
              f"{o.jobs_per_s:>7.2f}")
        for name, held in o.per_worker.items():
            print(f"    {name} holds {', '.join(held)}")


if __name__ == "__main__":
    main()
