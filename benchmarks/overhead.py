"""System overhead: the same job through hotpipe vs. the bare floor, side by side in one run.

floor  = a warm in-process pipeline call + PNG encode + one put_object to the same S3 server
system = POST /v1/jobs to the API, then long-poll until ``succeeded`` with its image in S3

Tiny SD, 64x64, 4 steps, one image, one torch thread on both sides.  Runs alternate
(floor, system, floor, ...) so machine noise hits both alike.  Target: the median
difference is at most 10 ms.  Usage: ``python -m benchmarks.overhead [--runs 40]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.status import Status
from hotpipe.workers.dev_checkpoints import make_checkpoints
from hotpipe.workers.encode import encode

PARAMS: dict[str, Any] = {"prompt": "a lighthouse", "num_inference_steps": 4, "height": 64, "width": 64}


def floor_once(pipe: Any, storage: Any, i: int, stages: dict[str, list[float]]) -> float:
    start = time.perf_counter()
    pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config)
    with torch.inference_mode():  # as the worker calls it
        image = pipe(**PARAMS, generator=torch.Generator("cpu").manual_seed(i), output_type="pil").images[0]
    ran = time.perf_counter()
    enc = encode(image, "png", {**PARAMS, "seed": i})
    encoded = time.perf_counter()
    storage.put(f"bench/floor/{i}.png", enc.data, enc.content_type)
    end = time.perf_counter()
    for name, seconds in (("floor run", ran - start), ("floor encode", encoded - ran), ("floor upload", end - encoded)):
        stages.setdefault(name, []).append(seconds)
    return end - start


def system_once(client: Client, storage: Any, i: int, stages: dict[str, list[float]]) -> float:
    start, wall = time.perf_counter(), time.time()
    job = client.submit({"checkpoint": "tiny-sd", "task": "text2image", "params": {**PARAMS, "seed": i}})
    record = client.wait(job.id, timeout_s=60)
    took = time.perf_counter() - start
    assert record.status is Status.SUCCEEDED and record.result, record.error
    assert record.started_at and record.finished_at
    created, started, finished = (t.timestamp() for t in (record.created_at, record.started_at, record.finished_at))
    marks = {"submit -> recorded": created - wall, "recorded -> claimed": started - created,
             "claimed -> succeeded": finished - started, "succeeded -> client": wall + took - finished}
    marks.update({f"  worker {k}": v for k, v in record.result.timings.items()})
    for name, seconds in marks.items():
        stages.setdefault(name, []).append(seconds)
    assert storage.exists(record.result.images[0].key)
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--worker-env", type=lambda kv: tuple(kv.split("=", 1)), action="append", default=[],
                    metavar="HOTPIPE_X=V", help="extra setting for the stack's processes (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        make_checkpoints(models, ["tiny-sd"])
        pipe = DiffusionPipeline.from_pretrained(str(models / "tiny-sd"), dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        env = {"HOTPIPE_TORCH_THREADS": "1", **dict(args.worker_env)}
        redis_binary = find_redis_server("system")
        with LocalStack(Path(tmp) / "stack", models, redis_binary=redis_binary, extra_env=env) as stack, \
                Client(stack.api_url) as client:
            storage = stack.storage()
            stages: dict[str, list[float]] = {}
            for i in range(args.warmup):
                floor_once(pipe, storage, i, stages)
                system_once(client, storage, i, stages)
            stages.clear()
            floor, system = [], []
            for i in range(args.runs):
                floor.append(floor_once(pipe, storage, i, stages))
                system.append(system_once(client, storage, i, stages))
    f_med, s_med = statistics.median(floor) * 1e3, statistics.median(system) * 1e3
    print(f"runs={args.runs} (alternating), tiny SD 64x64, 4 steps, 1 image, 1 torch thread")
    print(f"floor  median {f_med:7.2f} ms   p90 {sorted(floor)[int(0.9 * len(floor))] * 1e3:7.2f} ms")
    print(f"system median {s_med:7.2f} ms   p90 {sorted(system)[int(0.9 * len(system))] * 1e3:7.2f} ms")
    print(f"difference (system - floor) median: {s_med - f_med:+.2f} ms   target <= 10 ms")
    print("stages (median ms):")
    for name, values in stages.items():
        print(f"  {name:<22} {statistics.median(values) * 1e3:7.2f}")


if __name__ == "__main__":
    main()
