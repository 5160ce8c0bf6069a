"""What one job costs Redis: commands (client-sent and run inside scripts) and round trips.

A real stack (redis-server, moto S3, the API, one Celery prefork worker; tiny SD, 32x32, 2 steps)
runs ``--jobs`` jobs one at a time, each: ``POST /v1/jobs``, then one long-poll
``GET /v1/jobs/{id}?wait=`` until it is terminal — submit, claim, progress, stages, terminal
write, one client read.  After warm-up jobs (scripts loaded, connections open, the checkpoint
hot), three snapshots: before the jobs, after them, and after as long again with no jobs, so the
background (heartbeats, registry, reaper, Kombu's BRPOP polling) is measured over the same wall
time and subtracted.

How each figure is counted:

- **every command, inside scripts too**: ``INFO commandstats`` on the server (Redis counts each
  command a script runs under its own name; EVALSHA itself once); the benchmark's own INFO calls
  are left out;
- **client-sent commands** and **round trips**: ``benchmarks/redis_probe.py``, loaded into every
  process of the stack by a ``sitecustomize`` on their ``PYTHONPATH``, counts each command
  redis-py packs and each batch it writes (one write = one round trip: a pipeline, a MULTI/EXEC
  block, one command or one blocking BRPOP alike), by process role: the API, the worker's parent
  (Kombu's consumer, Celery's task events) and its prefork child (the job runner);
- **run inside scripts**: the server's count minus the client-sent count, command by command.

Usage: ``python -m benchmarks.redis_cost [--jobs 20] [--env HOTPIPE_MAX_QUEUED_PER_FAMILY=1000]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks import redis_probe
from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.status import Status
from hotpipe.workers.dev_checkpoints import make_checkpoints

PARAMS = {"prompt": "a lantern", "num_inference_steps": 2, "height": 32, "width": 32}
REPO = Path(__file__).resolve().parent.parent
#: the process roles, as the probe names them, and how the tables head them
ROLES = {"api": "API", "worker-child": "worker child (job)", "worker": "worker parent",
         "worker/celery": "worker parent: Kombu + Celery events", "worker-child/celery": "worker child: Celery"}
#: INFO calls the benchmark itself makes per interval (INFO commandstats + INFO stats, once per snapshot)
OWN_INFO = 2


@dataclass
class Snapshot:
    """What the server and the stack's processes had counted at one moment."""

    at: float
    server: Counter[str]
    net_in: int
    sent: dict[str, Counter[str]]


def snapshot(r: redis.Redis, probe_dir: Path) -> Snapshot:
    time.sleep(redis_probe.DUMP_S * 3)  # every process has written its counts since the last command
    sent = redis_probe.read_all(probe_dir)
    stats = r.info("commandstats")
    server = Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})
    return Snapshot(time.monotonic(), server, int(r.info("stats")["total_net_input_bytes"]), sent)


def delta(a: Snapshot, b: Snapshot) -> Snapshot:
    server = b.server - a.server
    server["info"] -= OWN_INFO
    sent = {role: b.sent.get(role, Counter()) - a.sent.get(role, Counter()) for role in b.sent}
    return Snapshot(b.at - a.at, +server, b.net_in - a.net_in, sent)


def per_job(jobs: Snapshot, idle: Snapshot, n: int) -> dict[str, dict[str, float]]:
    """Per-job counts, idle background (scaled to the jobs' wall time) subtracted: ``server`` (every
    command), one table per role (client-sent, with ``rt`` for round trips), ``scripts``."""
    scale = jobs.at / idle.at

    def net(a: Counter[str], b: Counter[str]) -> dict[str, float]:
        return {k: (a[k] - b[k] * scale) / n for k in set(a) | set(b) if abs(a[k] - b[k] * scale) / n >= 0.005}

    out = {"server": net(jobs.server, idle.server)}
    for role in set(jobs.sent) | set(idle.sent):
        out[role] = net(jobs.sent.get(role, Counter()), idle.sent.get(role, Counter()))
    sent: dict[str, float] = {}
    for role in ROLES.keys() | (set(out) - {"server"}):
        for key, value in out.get(role, {}).items():
            if key.startswith("cmd "):
                sent[key.removeprefix("cmd ")] = sent.get(key.removeprefix("cmd "), 0.0) + value
    # (a command this Redis refuses as unknown, like CLIENT SETINFO before 7.2, is in no commandstats
    # row: it counts as client-sent only)
    out["scripts"] = {k: v - sent.get(k, 0.0) for k, v in out["server"].items()
                      if abs(v - sent.get(k, 0.0)) >= 0.005}
    out["net_in"] = {"bytes": (jobs.net_in - idle.net_in * scale) / n}
    return out


def run_jobs(client: Client, n: int, seed: int = 0) -> None:
    for i in range(n):
        job = client.submit({"checkpoint": "tiny-sd", "task": "text2image", "params": {**PARAMS, "seed": seed + i}})
        record = client.get(job.id, wait_s=60)
        while not record.status.is_terminal():
            record = client.get(job.id, wait_s=60)
        assert record.status is Status.SUCCEEDED, record.error


def measure(models: Path, workdir: Path, jobs: int, warmup: int,
            settings: dict[str, str]) -> tuple[dict[str, dict[str, float]], float]:
    probe_dir, site = workdir / "probe", workdir / "site"
    probe_dir.mkdir(parents=True)
    site.mkdir()
    (site / "sitecustomize.py").write_text("from benchmarks.redis_probe import install\n\ninstall()\n")
    path = os.pathsep.join(p for p in (str(site), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {"HOTPIPE_TORCH_THREADS": "1", **settings, redis_probe.DIR_ENV: str(probe_dir), "PYTHONPATH": path}
    with LocalStack(workdir / "stack", models, redis_binary=find_redis_server("system"), extra_env=env) as stack, \
            Client(stack.api_url) as client:
        r = redis.Redis.from_url(stack.settings.redis_url)
        run_jobs(client, warmup, seed=10_000)
        first = snapshot(r, probe_dir)
        run_jobs(client, jobs)
        second = snapshot(r, probe_dir)
        time.sleep(max(0.0, second.at - first.at - redis_probe.DUMP_S * 3))
        third = snapshot(r, probe_dir)
    busy, idle = delta(first, second), delta(second, third)
    return per_job(busy, idle, jobs), busy.at


def columns(result: dict[str, dict[str, float]]) -> list[str]:
    """The roles that sent something, the known ones first."""
    seen = [role for role in result if role not in ("server", "scripts", "net_in")]
    return [r for r in ROLES if r in seen] + sorted(r for r in seen if r not in ROLES)


def table(result: dict[str, dict[str, float]]) -> list[str]:
    """Per job, command by command: who sent it (one column per role), run inside scripts, and in all."""
    roles = columns(result)
    heads = [ROLES.get(r, r) for r in roles] + ["inside scripts", "all"]
    lines = ["| command | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    rows = {}
    for name in {k.removeprefix("cmd ") for r in roles for k in result[r] if k.startswith("cmd ")} | set(
            result["scripts"]):
        cells = [result[r].get("cmd " + name, 0.0) for r in roles] + [result["scripts"].get(name, 0.0)]
        rows[name] = [*cells, sum(cells)]
    for name, cells in sorted(rows.items(), key=lambda kv: (-kv[1][-1], kv[0])):
        if abs(cells[-1]) >= 0.005:
            lines.append(f"| {name} | " + " | ".join(f"{c:.2f}" if abs(c) >= 0.005 else "" for c in cells) + " |")
    return lines


def totals(result: dict[str, dict[str, float]]) -> list[str]:
    """The three figures the issue sets targets for, hotpipe's own and Celery's apart, by role."""
    roles = columns(result)
    sent = {r: sum(v for k, v in result[r].items() if k.startswith("cmd ")) for r in roles}
    trips = {r: result[r].get("rt", 0.0) for r in roles}
    ours = [r for r in roles if not r.endswith("/celery")]
    theirs = [r for r in roles if r.endswith("/celery")]
    scripts = sum(result["scripts"].values())
    lines = [f"commands per job, inside scripts too: {sum(sent.values()) + scripts:.2f} in all = hotpipe "
             f"{sum(sent[r] for r in ours) + scripts:.2f} + Kombu/Celery {sum(sent[r] for r in theirs):.2f}"
             "   (target <= 60)"]
    for label, figures, target in (("client-sent commands", sent, 20), ("round trips", trips, 10)):
        split = ", ".join(f"{ROLES.get(r, r)} {figures[r]:.2f}" for r in roles)
        lines.append(f"{label} per job: {sum(figures.values()):.2f} in all = hotpipe "
                     f"{sum(figures[r] for r in ours):.2f} + Kombu/Celery {sum(figures[r] for r in theirs):.2f}"
                     f"   (target <= {target}; {split})")
    lines.append(f"run inside scripts per job: {scripts:.2f}; bytes sent to Redis per job: "
                 f"{result['net_in']['bytes']:.0f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--env", type=lambda kv: tuple(kv.split("=", 1)), action="append", default=[],
                        metavar="HOTPIPE_X=V", help="a setting for the stack's processes (repeatable), e.g. "
                        "HOTPIPE_MAX_QUEUED_PER_FAMILY=1000 to count the admission bound's reads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        make_checkpoints(models, names=["tiny-sd"])
        result, wall_s = measure(models, Path(tmp) / "run", args.jobs, args.warmup, dict(args.env))
    print(f"settings: {dict(args.env) or 'defaults'}")
    print(f"{args.jobs} jobs one at a time in {wall_s:.1f} s (idle background over as long again subtracted); "
          "per job:")
    print("\n".join(table(result)))
    print()
    print("\n".join(totals(result)))


if __name__ == "__main__":
    main()
