"""Recovery time: a worker dies mid-job; how long until the job is back in its queue, and done.

Two kinds of death, ``--trials`` each (20), on a real stack (redis-server, moto S3, the API, two
workers ``a`` and ``b``) at the **default** recovery settings (lease 30 s, worker heartbeat 1 s,
silence window ``worker_ttl_s`` 6 s, reaper every 2 s, 3 attempts):

- **child**: only the pool child running the job is SIGKILLed (the OOM killer, a segfault, a
  CUDA fault); the Celery parent lives, sees it die, and hands the attempt back.
- **worker**: the whole worker (parent and child, its process group) is SIGKILLed, as a lost
  node or ``kill -9`` of the pod; the other worker's reaper takes the job back once the dead
  worker's registry record has been silent for the window.  The killed worker is restarted
  (and ready) before the next trial.
- **lease** (the baseline, opt-in: ``--kinds child,worker,lease``): the same whole-worker kill with
  the workers' silence window set to 600 s, so only the lease (30 s) recovers the job — how
  recovery worked before the registry silence was used.

Per trial: a 60-step tiny-sd job is submitted, the kill comes once it is mid-denoise, and the
record is polled every 10 ms: **kill → requeue** is until attempt 1 no longer holds it (status
left ``running``, or a later attempt already claimed it), **kill → success** until it is
``succeeded``.  Medians, 90th percentiles and maxima are printed as a Markdown table.

Usage: ``python -m benchmarks.recovery [--trials 20] [--kinds child,worker[,lease]] [--lease-trials 5]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.registry import Registry
from hotpipe.shared.settings import Settings
from hotpipe.shared.status import Status
from hotpipe.shared.store import JobStore

#: only what a two-worker stack on a small host needs; every recovery setting stays at its default
ENV = {"HOTPIPE_PRELOAD": "tiny-sd", "HOTPIPE_ROUTING": "family", "HOTPIPE_TORCH_THREADS": "1"}
WORKERS = ("a", "b")
#: each kind's extra worker environment (the baseline turns the silence window off)
KIND_ENV: dict[str, dict[str, str]] = {"child": {}, "worker": {}, "lease": {"HOTPIPE_WORKER_TTL_S": "600"}}
PARAMS = {"prompt": "a red cube", "num_inference_steps": 60, "height": 64, "width": 64}
POLL_S = 0.01
WAIT_S = 300.0


def poll(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(POLL_S)
    raise TimeoutError(f"not within {WAIT_S}s: {what}")


def mid_run(store: JobStore, job_id: str) -> tuple[str, int] | None:
    job = store.get(job_id)
    if job is None or job.record.status is not Status.RUNNING or not job.worker or job.record.progress is None:
        return None
    if not 2 <= job.record.progress.step < job.record.progress.total:
        return None
    node, _, pid = job.worker.partition(" pid=")
    return node.partition("@")[0], int(pid)


def all_ready(registry: Registry) -> bool:
    ready = {w.name.partition("@")[0] for w in registry.live() if w.ready}
    return ready >= set(WORKERS)


def trial(stack: LocalStack, client: Client, store: JobStore, kind: str, seed: int) -> tuple[float, float]:
    job_id = client.submit({"checkpoint": "tiny-sd", "task": "text2image", "params": {**PARAMS, "seed": seed}}).id
    victim, child = poll(lambda: mid_run(store, job_id), f"job {job_id} mid-run")
    if kind == "child":
        os.kill(child, signal.SIGKILL)  # the pool child only
    else:
        stack.procs[victim].kill_group()
    killed = time.monotonic()

    def moved_on() -> bool:
        job = store.get(job_id)
        return job is not None and (job.record.status is not Status.RUNNING or job.record.attempts > 1)

    poll(moved_on, f"job {job_id} taken back")
    requeued = time.monotonic() - killed
    done = poll(lambda: (j := store.get(job_id)) is not None and j.record.status.is_terminal() and j,
                f"job {job_id} finished")
    succeeded = time.monotonic() - killed
    if done.record.status is not Status.SUCCEEDED:
        raise RuntimeError(f"job {job_id} ended {done.record.status}: {done.record.error}")
    if kind != "child":
        stack.procs[victim].popen.wait()
        stack.start_workers({victim: KIND_ENV[kind]})
    return requeued, succeeded


def start_workers(stack: LocalStack, env: dict[str, str]) -> None:
    """Both workers up with ``env`` (restarted if they run with another)."""
    for name in WORKERS:
        if name in stack.procs and stack.procs[name].popen.poll() is None:
            stack.procs[name].stop()
    stack.start_workers({name: env for name in WORKERS})


def summary(kind: str, name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
    return (f"| {kind} | {name} | {len(values)} | {statistics.median(values):.2f} | {p90:.2f} | "
            f"{ordered[0]:.2f} | {ordered[-1]:.2f} |")


def make_checkpoints(root: Path) -> None:
    subprocess.run([sys.executable, "-m", "hotpipe", "dev", "make-checkpoints", str(root)], check=True,
                   capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kinds", default="child,worker")
    parser.add_argument("--lease-trials", type=int, default=5, help="trials of the (slow) lease baseline")
    args = parser.parse_args()
    defaults = Settings.from_env({})
    print(f"defaults: lease {defaults.lease_s:g} s, heartbeat {defaults.worker_heartbeat_s:g} s, silence window "
          f"{defaults.worker_ttl_s:g} s, reaper every {defaults.reaper_interval_s:g} s", flush=True)
    rows = ["| death | from kill to | trials | median s | p90 s | min s | max s |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="hotpipe-recovery-") as tmp:
        models = Path(tmp) / "models"
        make_checkpoints(models)
        with LocalStack(Path(tmp) / "stack", models, redis_binary=find_redis_server("system"), workers=0,
                        extra_env=ENV) as stack, Client(stack.api_url) as client:
            store = JobStore(redis.Redis.from_url(stack.settings.redis_url, decode_responses=True), 600)
            registry = Registry(store.redis, defaults.worker_ttl_s)
            for kind in args.kinds.split(","):
                start_workers(stack, KIND_ENV[kind])
                requeues, successes = [], []
                for i in range(args.lease_trials if kind == "lease" else args.trials):
                    poll(lambda: all_ready(registry), "both workers ready")
                    requeued, succeeded = trial(stack, client, store, kind, seed=i)
                    requeues.append(requeued)
                    successes.append(succeeded)
                    print(f"{kind} trial {i + 1}: requeued {requeued:.2f} s, succeeded {succeeded:.2f} s", flush=True)
                rows += [summary(kind, "requeue", requeues), summary(kind, "success", successes)]
    print("\n".join(rows))


if __name__ == "__main__":
    main()
