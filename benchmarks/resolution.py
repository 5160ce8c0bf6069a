"""Resolution at submit: a Hub checkpoint cold (Hub cache, offline) vs cached in Redis, and the parity count.

``python -m benchmarks.resolution [--runs 200]``.  Builds a Hub cache in huggingface_hub's
layout in a temporary folder, sets ``HF_HUB_OFFLINE=1`` before huggingface_hub is imported,
starts a real redis-server, and times ``resolve()`` (what the API runs per submit):

* **cold**: the Redis entry deleted before each run, so the file comes from ``hf_hub_download``
  (offline: a walk of the Hub cache; online it would be an HTTP request to the Hub on top);
* **cached**: the entry in Redis (one GET);
* **local**: a folder under the model root, for comparison.

The parity count is what ``tests/workers/test_family_parity.py`` and
``tests/workers/test_variant_parity.py`` check against the installed Diffusers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path) -> None:
    repo = root / "models--org--tiny-sd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    index = {"_class_name": "StableDiffusionPipeline"}
    (repo / "snapshots" / COMMIT / "model_index.json").write_text(json.dumps(index))


def median_ms(fn: Callable[[], object], runs: int, before: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def parity_counts() -> dict[str, int]:
    """(entries in Diffusers' AutoPipeline mappings, of which checked) and the other parity checks' sizes."""
    from diffusers.pipelines import auto_pipeline as ap

    from hotpipe.shared import family_table
    from hotpipe.workers import tables_gen
    from tests.workers import test_family_parity as fp
    from tests.workers import test_variant_parity as vp

    mappings: list[Any] = ap.SUPPORTED_TASKS_MAPPINGS
    entries = sum(len(m) for m in mappings)
    matching = sum(int(getattr(family_table, name).get(family) == cls.__name__)
                   for name, attr in tables_gen.MAPPINGS.items() for family, cls in getattr(ap, attr).items())
    names = fp.exported_pipeline_names()
    return {"diffusers_mapping_entries": entries, "mapping_entries_matching": matching,
            "class_x_task_resolutions_checked": len(names) * 3,
            "variant_requests_checked": len(list(vp.cases()))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        hub_cache(work / "hub")
        os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(work / "hub"), HF_HOME=str(work / "home"))
        import redis

        from hotpipe.devstack import find_redis_server, start_redis
        from hotpipe.shared import keys
        from hotpipe.shared.checkpoints import resolve
        from hotpipe.shared.hub_cache import CachedHub
        from hotpipe.shared.job import Task

        (work / "models" / "tiny-sd").mkdir(parents=True)
        (work / "models" / "tiny-sd" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
        proc, url = start_redis(work, find_redis_server("system"))
        try:
            client = redis.Redis.from_url(url)
            hub = CachedHub(client, ttl_s=300)
            key = keys.hub_file("org/tiny-sd", None, "model_index.json")

            def submit_hub() -> object:
                return resolve("org/tiny-sd", Task.IMAGE2IMAGE, work / "models", hub=hub)

            submit_hub()  # imports and first-touch costs out of the way
            cold = median_ms(submit_hub, args.runs, before=lambda: client.delete(key))
            cached = median_ms(submit_hub, args.runs)
            local = median_ms(lambda: resolve("tiny-sd", Task.IMAGE2IMAGE, work / "models"), args.runs)
            client.close()
        finally:
            proc.stop()
    print(json.dumps({"runs": args.runs, "hub_cold_ms": round(cold, 3), "hub_cached_ms": round(cached, 3),
                      "local_ms": round(local, 3), **parity_counts()}, indent=2))


if __name__ == "__main__":
    main()
