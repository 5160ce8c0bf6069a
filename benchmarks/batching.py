"""Dynamic batching (issue 17): what forming a batch costs, what batching gains, what it leaves unchanged.

One run, one local stack (real redis-server, S3 server, API, Celery prefork worker), measuring:

- **forming**: ``Batcher.form`` on a claimed job with compatible jobs queued (and incompatible ones among
  them): milliseconds per job taken (scan + spec reads + one take script each), for batches of 4 and 8;
- **in-process**: one pipeline call of 1 image vs one of ``--batch`` images (``runner.run`` with the
  batch's per-image prompts and generators, as the worker calls it): images per second;
- **through the API**: ``--jobs`` jobs queued before the worker starts, run with ``max_batch`` 1 and
  ``--batch``: images per second from the first claim to the last terminal write (the records' own
  timestamps), and the batch rate against the in-process one;
- **Poisson load** (``--poisson``): jobs arriving at 50% and 90% of the batch-1 capacity measured above,
  p50/p95 latency (submit to ``succeeded``, the records' timestamps), ``max_batch`` 1 vs ``--batch``;
- **overhead** (``--baseline-tree DIR``, a source tree of the code before batching, e.g.
  ``git archive main | tar -x -C DIR``): the same sequential job, submit → ``succeeded``, with a worker
  of that tree and one of this tree at ``max_batch`` 1, alternating blocks of jobs in one run.

CPU (the tiny SD, 64², 4 steps): ``python -m benchmarks.batching --baseline-tree /tmp/main-tree``.
GPU (an SD-1.5-sized fp16 checkpoint built offline, 512², 20 steps, 64 jobs, ``max_batch`` 8):
``python -m benchmarks.batching --device cuda --out batching-cuda.json``.  Prints JSON (and writes
``--out``).  Not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
import torch

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.batching import Batcher, scan, waiting_lists
from hotpipe.shared.checkpoints import resolve
from hotpipe.shared.job import JobRecord, Task, new_job_id
from hotpipe.shared.messages import run_message
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.store import JobStore
from hotpipe.workers import runner
from hotpipe.workers.batch_runner import per_image_args
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.dev_checkpoints import make_checkpoints

FAMILY = "stable-diffusion"
#: device type -> (checkpoint, size, steps, jobs, batch)
PRESETS: dict[str, tuple[str, int, int, int, int]] = {"cpu": ("tiny-sd", 64, 4, 32, 4),
                                                       "cuda": ("sd15-shape", 512, 20, 64, 8)}
WORKER = "bench"


def params(size: int, steps: int, i: int) -> dict[str, Any]:
    return {"prompt": f"a lighthouse at dusk, take {i}", "num_inference_steps": steps, "height": size,
            "width": size, "seed": i}


def forming_cost(redis_url: str, model_root: Path, batch: int, rounds: int, ahead: int = 0) -> dict[str, float]:
    """Median ms per job taken by ``Batcher.form`` (database 1 of the stack's Redis, no worker there), with
    ``ahead`` incompatible jobs queued before the compatible ones (a backlog of other work)."""
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/1", decode_responses=True)
    store = JobStore(client, 600)
    resolved = resolve("tiny-sd", Task.TEXT2IMAGE, model_root)
    batcher = Batcher.for_worker(client, "bench@host", [FAMILY], batch, 30_000)
    per_job: list[float] = []
    for r in range(rounds):
        client.flushdb()
        for i in range(-ahead, 2 * batch):  # ``ahead`` of another size, then half compatible, interleaved
            p = params(64 if i >= 0 and i % 2 == 0 else 128, 4, r * 1000 + i)
            job_id = new_job_id()
            store.create(job_id, family=FAMILY, pipeline=resolved.pipeline, checkpoint="tiny-sd", revision=None,
                         task=Task.TEXT2IMAGE, spec=JobSpec(resolved=resolved, task=Task.TEXT2IMAGE, params=p),
                         message=run_message(job_id, FAMILY))
        oldest = scan(client, waiting_lists(None, [FAMILY]))[ahead]
        client.lrem(oldest.list_key, 1, oldest.payload)  # what Celery's BRPOP did
        first = store.claim_job(oldest.job_id, "bench@host pid=1")
        assert first is not None
        start = time.perf_counter()
        taken = batcher.form(first, "bench@host pid=1")
        took = time.perf_counter() - start
        assert len(taken) == batch - 1, len(taken)
        per_job.append(took / len(taken) * 1e3)
    client.flushdb()
    return {"batch": batch, "ahead": ahead, "ms_per_job_median": round(statistics.median(per_job), 3),
            "ms_per_job_max": round(max(per_job), 3), "rounds": rounds}


def inprocess_rate(model_root: Path, checkpoint: str, device: str, size: int, steps: int, batch: int,
                   repeats: int) -> dict[str, float]:
    """Images per second of one call of 1 image and of ``batch`` images, on a warm pipeline."""
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    cache = PipelineCache(device, dtype)
    resolved = resolve(checkpoint, Task.TEXT2IMAGE, model_root)
    pipe = cache.get_key(cache.key_of(resolved), Task.TEXT2IMAGE, resolved.pipeline)
    out: dict[str, float] = {}
    for n in (1, batch):
        specs = [JobSpec(resolved=resolved, task=Task.TEXT2IMAGE, params=params(size, steps, i)) for i in range(n)]
        took = [timed_call(pipe, specs, device) for _ in range(repeats + 1)][1:]  # the first warms up
        out[f"batch_{n}_images_per_s"] = round(n / statistics.median(took), 3)
    out["largest_difference_vs_alone"] = largest_difference(pipe, specs)
    return out


def largest_difference(pipe: Any, specs: list[JobSpec]) -> int:
    """Levels of 255: each image of one call for ``specs`` against the same job's call alone, any pixel."""
    def go_on(step: int, total: int) -> runner.Verdict:
        return runner.Verdict.GO_ON

    batched = runner.run(pipe, specs[0].params, {}, go_on, None, per_image_args(specs))
    worst = 0
    for spec, image in zip(specs, batched, strict=True):
        alone = runner.run(pipe, spec.params, {}, go_on, None)[0]
        worst = max(worst, int(np.abs(np.asarray(image, dtype=np.int16) - np.asarray(alone, dtype=np.int16)).max()))
    return worst


def timed_call(pipe: Any, specs: list[JobSpec], device: str) -> float:
    """Seconds of one pipeline call for ``specs``, made as the worker makes a batch's."""
    def go_on(step: int, total: int) -> runner.Verdict:
        return runner.Verdict.GO_ON

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    runner.run(pipe, specs[0].params, {}, go_on, None, per_image_args(specs))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def records(store: JobStore, ids: list[str], timeout_s: float) -> list[JobRecord]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [store.get(j) for j in ids]
        if all(f is not None and f.record.status.is_terminal() for f in found):
            return [f.record for f in found if f is not None]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(1 for f in found if f and f.record.status.is_terminal())}/{len(ids)} done")
        time.sleep(0.05)


def queued_rate(stack: LocalStack, client: Client, store: JobStore, env: dict[str, str], jobs: int, size: int,
                steps: int, timeout_s: float) -> dict[str, float]:
    """``jobs`` jobs queued, then a worker with ``env`` starts: images/s, first claim to last end."""
    ids = [client.submit({"checkpoint": env["HOTPIPE_PRELOAD"], "task": "text2image",
                          "params": params(size, steps, i)}).id for i in range(jobs)]
    proc = stack.start_worker(WORKER, env)
    try:
        done = records(store, ids, timeout_s)
    finally:
        proc.stop()
    assert all(r.status.value == "succeeded" for r in done), [r.error for r in done if r.error]
    first = min(r.started_at for r in done if r.started_at)
    last = max(r.finished_at for r in done if r.finished_at)
    return {"jobs": jobs, "images_per_s": round(jobs / (last - first).total_seconds(), 3)}


def poisson(stack: LocalStack, client: Client, store: JobStore, env: dict[str, str], rate: float, jobs: int,
            size: int, steps: int, timeout_s: float) -> dict[str, float]:
    """Jobs arriving at ``rate`` per second (exponential gaps) on a running worker: latency p50/p95."""
    proc = stack.start_worker(WORKER, env)
    rng = random.Random(17)
    ids: list[str] = []
    try:
        for i in range(jobs):
            ids.append(client.submit({"checkpoint": env["HOTPIPE_PRELOAD"], "task": "text2image",
                                      "params": params(size, steps, 1000 + i)}).id)
            time.sleep(rng.expovariate(rate))
        done = records(store, ids, timeout_s)
    finally:
        proc.stop()
    latency = sorted((r.finished_at - r.created_at).total_seconds() for r in done if r.finished_at)
    return {"rate_per_s": round(rate, 3), "jobs": jobs, "p50_s": round(statistics.median(latency), 3),
            "p95_s": round(latency[int(0.95 * (len(latency) - 1))], 3)}


def overhead(stack: LocalStack, client: Client, baseline: Path, blocks: int, per_block: int,
             timeout_s: float) -> dict[str, Any]:
    """Submit → ``succeeded`` of one job at a time, a baseline-tree worker vs this tree's at ``max_batch`` 1."""
    roots = ":".join(str(baseline / p) for p in ("", "shared", "producer", "workers"))
    variants = {"baseline": {"PYTHONPATH": roots}, "max_batch_1": {"HOTPIPE_MAX_BATCH": "1"}}
    took: dict[str, list[float]] = {name: [] for name in variants}
    runs: dict[str, list[float]] = {name: [] for name in variants}  # the worker's own pipeline-call time
    for b in range(blocks):
        order = list(variants.items())
        for name, extra in order if b % 2 == 0 else order[::-1]:  # neither always goes first
            proc = stack.start_worker(WORKER, {"HOTPIPE_PRELOAD": "tiny-sd", **extra})
            try:
                for i in range(per_block + 2):
                    start = time.perf_counter()
                    job = client.submit({"checkpoint": "tiny-sd", "task": "text2image",
                                         "params": params(64, 4, b * 1000 + i)})
                    record = client.wait(job.id, timeout_s=timeout_s)
                    assert record.status.value == "succeeded", record.error
                    if i >= 2 and record.result is not None:  # the first two warm the worker up
                        took[name].append(time.perf_counter() - start)
                        runs[name].append(record.result.timings["run"])
            finally:
                proc.stop()
    medians = {name: round(statistics.median(v) * 1e3, 2) for name, v in took.items()}
    return {"runs_each": len(took["baseline"]), "median_ms": medians,
            "worker_run_median_ms": {name: round(statistics.median(v) * 1e3, 2) for name, v in runs.items()},
            "difference_ms": round(medians["max_batch_1"] - medians["baseline"], 2)}


def build_models(root: Path, device: str) -> None:
    make_checkpoints(root)
    if device.startswith("cuda"):
        from benchmarks.cuda import build_sd15_shape
        build_sd15_shape(root / "sd15-shape")


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    device = "cuda:0" if args.device == "cuda" else args.device
    checkpoint, size, steps, jobs, batch = PRESETS["cuda" if device.startswith("cuda") else "cpu"]
    jobs, batch = args.jobs or jobs, args.batch or batch
    models = tmp / "models"
    build_models(models, device)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
                           "checkpoint": checkpoint, "size": size, "steps": steps, "batch": batch}
    if args.only != "forming":
        out["inprocess"] = inprocess_rate(models, checkpoint, device, size, steps, batch, args.repeats)
    env = {"HOTPIPE_ROUTING": "family", "HOTPIPE_TORCH_THREADS": str(args.threads), "HOTPIPE_DEVICE": device}
    with LocalStack(tmp / "stack", models, redis_binary=find_redis_server("system"), workers=0,
                    extra_env=env) as stack, Client(stack.api_url) as client:
        store = JobStore(redis.Redis.from_url(stack.settings.redis_url, decode_responses=True), 600)
        out["forming"] = [forming_cost(stack.settings.redis_url, models, b, args.rounds, ahead)
                          for b in (4, 8) for ahead in (0, 40)]
        if args.only == "forming":
            return out
        worker = {"HOTPIPE_PRELOAD": checkpoint}
        one = queued_rate(stack, client, store, {**worker, "HOTPIPE_MAX_BATCH": "1"}, jobs, size, steps, args.timeout)
        many = queued_rate(stack, client, store, {**worker, "HOTPIPE_MAX_BATCH": str(batch)}, jobs, size, steps,
                           args.timeout)
        out["queued"] = {"max_batch_1": one, f"max_batch_{batch}": many,
                         "speedup": round(many["images_per_s"] / one["images_per_s"], 3),
                         "of_inprocess_batched": round(many["images_per_s"]
                                                       / out["inprocess"][f"batch_{batch}_images_per_s"], 3)}
        if args.poisson:
            out["poisson"] = {f"{int(load * 100)}%": {
                f"max_batch_{b}": poisson(stack, client, store, {**worker, "HOTPIPE_MAX_BATCH": str(b)},
                                          load * one["images_per_s"], args.poisson, size, steps, args.timeout)
                for b in (1, batch)} for load in (0.5, 0.9)}
        if args.baseline_tree:
            out["overhead"] = overhead(stack, client, Path(args.baseline_tree), args.blocks, args.per_block,
                                       args.timeout)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (an SD-1.5-sized checkpoint, 512², 20 steps)")
    ap.add_argument("--jobs", type=int, help="jobs queued per rate measurement (cpu 32, cuda 64)")
    ap.add_argument("--batch", type=int, help="max_batch measured against 1 (cpu 4, cuda 8)")
    ap.add_argument("--repeats", type=int, default=5, help="in-process calls per batch size")
    ap.add_argument("--rounds", type=int, default=30, help="batches formed per size for the forming cost")
    ap.add_argument("--poisson", type=int, default=0, help="jobs per Poisson-load run (0: skip; cuda: try 64)")
    ap.add_argument("--baseline-tree", help="source tree of the code before batching, for the overhead blocks")
    ap.add_argument("--blocks", type=int, default=4, help="overhead: alternating blocks per variant")
    ap.add_argument("--per-block", type=int, default=15, help="overhead: jobs measured per block")
    ap.add_argument("--threads", type=int, default=1, help="HOTPIPE_TORCH_THREADS of the workers")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--only", choices=("all", "forming"), default="all", help="forming: only the forming cost")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
