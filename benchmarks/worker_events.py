"""What worker heartbeats and task events (Flower's feed) cost in Redis, side by side in one run.

Two stacks, one after the other (redis, S3, API, one worker): ``HOTPIPE_WORKER_EVENTS=true``
and ``false``.  In each, after a warm-up job: ``INFO commandstats`` before and after ``--jobs``
jobs run one at a time (commands per job, whole stack: submit, long-poll, claim, run, upload,
terminal write, the worker's registry and reaper), and before and after ``--idle`` seconds
with no jobs (commands per second of one idle worker).  Tiny SD, 32x32, 2 steps.
Usage: ``python -m benchmarks.worker_events [--jobs 40] [--idle 20]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.status import Status
from hotpipe.workers.dev_checkpoints import make_checkpoints

PARAMS = {"prompt": "a lantern", "num_inference_steps": 2, "height": 32, "width": 32}


def commandstats(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()})


def run_jobs(client: Client, jobs: int) -> None:
    for i in range(jobs):
        job = client.submit({"checkpoint": "tiny-sd", "task": "text2image", "params": {**PARAMS, "seed": i}})
        assert client.wait(job.id, timeout_s=120, poll_s=10).status is Status.SUCCEEDED


def measure(models: Path, workdir: Path, events: bool, jobs: int, idle_s: float) -> dict[str, Counter[str]]:
    env = {"HOTPIPE_WORKER_EVENTS": str(events).lower(), "HOTPIPE_TORCH_THREADS": "1"}
    with LocalStack(workdir, models, redis_binary=find_redis_server("system"), extra_env=env) as stack, \
            Client(stack.api_url) as client:
        r = redis.Redis.from_url(stack.settings.redis_url)
        run_jobs(client, 1)
        before = commandstats(r)
        run_jobs(client, jobs)
        after_jobs = commandstats(r)
        time.sleep(idle_s)
        after_idle = commandstats(r)
    return {"jobs": after_jobs - before, "idle": after_idle - after_jobs}


def report(label: str, counts: Counter[str], per: float, unit: str) -> None:
    top = ", ".join(f"{name} {n / per:.1f}" for name, n in counts.most_common(8))
    print(f"{label:<12} {sum(counts.values()) / per:7.1f} commands/{unit}  (publish {counts['publish'] / per:.2f}; "
          f"{top})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        make_checkpoints(models, names=["tiny-sd"])
        results = {events: measure(models, Path(tmp) / f"events-{events}", events, args.jobs, args.idle)
                   for events in (True, False)}
    for events, counts in results.items():
        label = "events on" if events else "events off"
        report(label, counts["jobs"], args.jobs, "job")
        report(label, counts["idle"], args.idle, "s idle")
    extra_job = (sum(results[True]["jobs"].values()) - sum(results[False]["jobs"].values())) / args.jobs
    extra_idle = (sum(results[True]["idle"].values()) - sum(results[False]["idle"].values())) / args.idle
    print(f"events cost {extra_job:+.1f} commands per job and {extra_idle:+.2f} per idle second per worker")


if __name__ == "__main__":
    main()
