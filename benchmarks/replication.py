"""What Sentinel and a submit that waits for a replica cost, and how long a failover's gap lasts.

``python -m benchmarks.replication [--runs 300]``.  Starts real processes on loopback: a Redis
primary, two replicas and three sentinels (``tests/sentinels.py``: down-after 1 s, failover
timeout 3 s), and serves the API in this process (FastAPI's TestClient, no HTTP socket) over the
tiny checkpoints.  ``POST /v1/jobs`` (tiny SD, text2image, nothing else) is timed three ways,
alternating in rounds of 25 so the host's load falls on all three alike:

* **url**: ``HOTPIPE_REDIS_URL`` straight at the primary (the default, no Sentinel);
* **sentinel**: found through the sentinels (``HOTPIPE_REDIS_SENTINELS``), no waiting;
* **wait1**: through the sentinels with ``HOTPIPE_REDIS_SUBMIT_REPLICAS=1`` (``WAIT 1`` on the
  create's connection before the 202).

Then the gap: the primary is SIGKILLed and submits (each with an Idempotency-Key, retried every
50 ms) go on until one is accepted by the new primary; prints how long that took and how many
503s were answered meanwhile.  Medians and p99 in ms, as JSON too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from hotpipe.devstack import LOCAL_AWS_ENV, find_redis_server
from hotpipe.producer.api import create_app
from hotpipe.shared.settings import Settings
from hotpipe.workers.dev_checkpoints import make_checkpoints
from tests.sentinels import SentinelGroup, start_group

BODY = {"checkpoint": "tiny-sd", "task": "text2image", "params": {"prompt": "a red cube", "num_inference_steps": 2}}
ROUND = 25


def configs(group: SentinelGroup, model_root: Path) -> dict[str, Settings]:
    base = {"HOTPIPE_MODEL_ROOT": str(model_root), "HOTPIPE_S3_ENDPOINT_URL": "http://127.0.0.1:1",
            "HOTPIPE_WEBHOOK_DISPATCHER": "false"}
    url = f"redis://127.0.0.1:{group.primary_port}/0"
    return {"url": Settings.from_env({**base, "HOTPIPE_REDIS_URL": url}),
            "sentinel": Settings.from_env({**base, **group.env()}),
            "wait1": Settings.from_env({**base, **group.env(), "HOTPIPE_REDIS_SUBMIT_REPLICAS": "1"})}


def submit_ms(api: TestClient) -> float:
    start = time.perf_counter()
    answer = api.post("/v1/jobs", json=BODY)
    elapsed = (time.perf_counter() - start) * 1000
    assert answer.status_code == 202, answer.text
    return elapsed


def costs(apis: dict[str, TestClient], runs: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {name: [] for name in apis}
    for api in apis.values():  # warm: connections open, scripts loaded, resolution cached
        for _ in range(10):
            submit_ms(api)
    for _ in range(max(1, runs // ROUND)):
        for name, api in apis.items():
            times[name].extend(submit_ms(api) for _ in range(ROUND))
    return {name: {"median_ms": round(statistics.median(t), 2),
                   "p99_ms": round(statistics.quantiles(t, n=100)[98], 2)} for name, t in times.items()}


def gap(api: TestClient, group: SentinelGroup) -> dict[str, Any]:
    """SIGKILL the primary; submit until the new primary accepts one."""
    group.procs["primary"].kill_group(signal.SIGKILL)
    killed, refused, n = time.monotonic(), 0, 0
    while time.monotonic() - killed < 60:
        answer = api.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": f"gap-{n}"})
        if answer.status_code in (200, 202):
            return {"gap_s": round(time.monotonic() - killed, 2), "answers_503": refused,
                    "other_answers": n - refused}
        refused += answer.status_code == 503 and bool(answer.headers.get("Retry-After"))
        n += 1
        time.sleep(0.05)
    raise RuntimeError("no submit accepted within 60 s of the kill")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    for name, value in LOCAL_AWS_ENV.items():
        os.environ.setdefault(name, value)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        make_checkpoints(root, ["tiny-sd"])
        group = start_group(Path(tmp) / "redis", find_redis_server("system"), replicas=2, sentinels=3)
        apis = {name: TestClient(create_app(s)) for name, s in configs(group, root).items()}
        try:
            for api in apis.values():
                api.__enter__()
            out: dict[str, Any] = costs(apis, args.runs)
            out["failover"] = gap(apis["wait1"], group)
        finally:
            for api in apis.values():
                api.__exit__(None, None, None)
            group.close()
    for name in ("url", "sentinel", "wait1"):
        print(f"{name:<9} POST /v1/jobs  median {out[name]['median_ms']:6.2f} ms  p99 {out[name]['p99_ms']:6.2f} ms")
    print(f"WAIT 1 adds {out['wait1']['median_ms'] - out['sentinel']['median_ms']:+.2f} ms (median); Sentinel "
          f"itself {out['sentinel']['median_ms'] - out['url']['median_ms']:+.2f} ms")
    f = out["failover"]
    print(f"failover gap: first 202 {f['gap_s']} s after the SIGKILL; {f['answers_503']} answers 503 + Retry-After, "
          f"{f['other_answers']} other")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
