"""LoRA hit rate: a Zipf mix of 20 adapters over one base checkpoint on 2 workers, affinity routing vs
family-queue-only, the same request sequence through the real API and Celery workers in one run.

Each worker keeps at most ``--slots`` adapters resident on its pipeline (``HOTPIPE_CACHE_MAX_ADAPTERS``).
Reported per mode: the adapter hit rate (hits / (hits + loads), from the workers' own counters in
``GET /v1/workers``), jobs/s, and the ceiling — the share of requests whose LoRA is among the
``2 x slots`` most requested, which no placement can beat.
Usage: ``python -m benchmarks.lora_affinity [--jobs 300] [--concurrency 4] [--slots 4]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.affinity import ceiling, counted, zipf_requests
from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.status import Status
from hotpipe.workers.dev_checkpoints import make_checkpoints
from hotpipe.workers.dev_loras import build_sd_lora

ADAPTERS, WORKERS = 20, 2
PARAMS: dict[str, Any] = {"prompt": "a lighthouse", "num_inference_steps": 2, "height": 32, "width": 32}


def build_models(root: Path) -> list[str]:
    make_checkpoints(root, ["tiny-sd"])
    names = [f"lora-{i:02d}" for i in range(ADAPTERS)]
    for i, name in enumerate(names):
        if not (root / name).is_dir():
            build_sd_lora(100 + i)(root / name, 0)
    return names


def run_mode(routing: str, models: Path, workdir: Path, requests: list[str],
             args: argparse.Namespace) -> dict[str, Any]:
    env = {"HOTPIPE_ROUTING": routing, "HOTPIPE_CACHE_MAX_ADAPTERS": str(args.slots), "HOTPIPE_TORCH_THREADS": "1",
           "HOTPIPE_ROUTE_BACKLOG_MAX": str(args.concurrency)}
    with LocalStack(workdir, models, redis_binary=find_redis_server("system"), workers=0, extra_env=env) as stack:
        stack.start_workers({f"w{i}": {} for i in range(WORKERS)})
        with Client(stack.api_url) as client:
            def one(job: tuple[int, str]) -> None:
                seed, lora = job
                record = client.submit({"checkpoint": "tiny-sd", "task": "text2image", "loras": [{"name": lora}],
                                        "params": {**PARAMS, "seed": seed}})
                done = client.wait(record.id, timeout_s=600)
                assert done.status is Status.SUCCEEDED, done.error

            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(one, enumerate(requests)))
            took = time.perf_counter() - start
            workers = counted(client, len(requests), uses=adapter_uses)
    stats = [w["stats"].get("adapters", {}) for w in workers]
    hits, loads = sum(s.get("hits", 0) for s in stats), sum(s.get("loads", 0) for s in stats)
    return {"mode": routing, "hits": hits, "loads": loads, "hit_rate": hits / max(1, hits + loads),
            "jobs_per_s": len(requests) / took,
            "per_worker": {w["name"]: w["stats"].get("adapters", {}).get("loads", 0) for w in workers}}


def adapter_uses(worker: dict[str, Any]) -> int:
    """How many LoRA jobs a worker's adapter counters cover (a hit or a load each)."""
    adapters = worker["stats"].get("adapters", {})
    return int(adapters.get("hits", 0) + adapters.get("loads", 0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        requests = zipf_requests(build_models(models), args.jobs, args.seed)
        best = ceiling(requests, WORKERS * args.slots)
        outcomes = [run_mode(mode, models, Path(tmp) / mode, requests, args) for mode in ("affinity", "family")]
    print(f"{args.jobs} jobs, {ADAPTERS} LoRAs on tiny-sd, Zipf 1.1 (seed {args.seed}), concurrency "
          f"{args.concurrency}, {WORKERS} workers x {args.slots} resident adapters; ceiling (top-"
          f"{WORKERS * args.slots} share) {best:.1%}")
    for o in outcomes:
        print(f"{o['mode']:<9} hits {o['hits']:>4} loads {o['loads']:>4} hit rate {o['hit_rate']:.1%} "
              f"({o['hit_rate'] / best:.1%} of ceiling), {o['jobs_per_s']:.2f} jobs/s, loads per worker "
              f"{o['per_worker']}")


if __name__ == "__main__":
    main()
