"""The OpenAI-compatible route vs the native API for the same job, and the catalog's scan vs its cache.

``python -m benchmarks.openai_api [--runs 30]``.  Starts a local stack (system redis-server, moto S3,
API process, one Celery worker) on tiny checkpoints and alternates, run by run, the same job —
tiny SD, 64x64, 2 steps, one image, a fixed seed, one torch thread — two ways:

* **native**: ``POST /v1/jobs`` then ``GET /v1/jobs/{id}?wait=`` until succeeded (hotpipe's SDK);
* **openai**: ``client.images.generate(...)`` with the official ``openai`` package (one request
  that submits through the same path and waits on the job's channel), answer with a presigned URL.

Then the catalog: ``scan()`` of the model root (every task resolved per checkpoint) vs a read of
the cached ``Catalog``.  Prints medians in ms and the differences, as JSON too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CHECKPOINTS = ("tiny-sd", "tiny-sdxl", "tiny-sdxl-refiner", "tiny-controlnet-sd", "tiny-controlnet-sdxl")
PROMPT = "a red cube"
JOB = {"prompt": PROMPT, "height": 64, "width": 64, "num_inference_steps": 2, "seed": 5}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def routes(api_url: str, runs: int) -> dict[str, float]:
    import openai

    from hotpipe.producer.client import Client

    with Client(api_url) as native, openai.OpenAI(base_url=api_url + "/v1", api_key="x", max_retries=0) as sdk:
        def by_native() -> None:
            job = native.submit({"checkpoint": "tiny-sd", "task": "text2image", "params": JOB})
            while native.get(job.id, wait_s=30).status.value != "succeeded":
                pass

        def by_openai() -> None:
            sdk.images.generate(model="tiny-sd", prompt=PROMPT, size="64x64",
                                extra_body={"steps": 2, "seed": 5})

        for _ in range(3):  # warm: the pipeline loaded, connections open
            by_native()
            by_openai()
        native_ms, openai_ms = [], []
        for _ in range(runs):
            native_ms.append(timed(by_native))
            openai_ms.append(timed(by_openai))
    return {"native_ms": statistics.median(native_ms), "openai_ms": statistics.median(openai_ms),
            "openai_minus_native_ms": statistics.median(o - n for o, n in zip(openai_ms, native_ms, strict=True))}


def catalog(model_root: Path, runs: int) -> dict[str, float]:
    from hotpipe.producer.catalog import Catalog, scan

    cached = Catalog(model_root, ttl_s=3600)
    cached.models()
    scans = [timed(lambda: scan(model_root)) for _ in range(runs)]
    reads = [timed(cached.models) for _ in range(runs)]
    return {"folders": len(scan(model_root)), "scan_ms": statistics.median(scans),
            "cached_read_ms": statistics.median(reads)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    from hotpipe.devstack import LocalStack, find_redis_server

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        names = [arg for name in CHECKPOINTS for arg in ("--name", name)]
        subprocess.run([sys.executable, "-m", "hotpipe", "dev", "make-checkpoints", str(models), *names],
                       check=True, capture_output=True)
        with LocalStack(Path(tmp) / "stack", models, redis_binary=find_redis_server("system"),
                        extra_env={"HOTPIPE_TORCH_THREADS": "1"}) as stack:
            figures = {**routes(stack.api_url, args.runs), **catalog(models, args.runs)}
    for name, value in figures.items():
        print(f"{name:>24}: {value:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
