"""Flower and the celery command line against a real stack, with no shim: ``celery -A hotpipe``.

The module runs its own stack (redis, S3, API) and two workers started with the default node
name, as two workers on one host would be (one per GPU): they must be two workers in
``GET /v1/workers``, in ``celery inspect`` and in Flower, whose UI lists them online (heartbeats)
and the jobs they ran (task events: name, state, runtime, the job id in args).  A third worker
started with a live worker's name must refuse to start, saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hotpipe.devstack import LocalStack, find_redis_server, free_port, spawn, wait_until
from hotpipe.producer.client import Client
from hotpipe.shared.celery_app import TASK_NAME
from hotpipe.shared.status import Status
from tests.e2e.polling import wait_for

pytestmark = pytest.mark.e2e

ENV = {"HOTPIPE_TORCH_THREADS": "1", "HOTPIPE_WORKER_METRICS_PORT": "0"}
WAIT_S = 180.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Iterator[LocalStack]:
    """A stack whose two workers have the default (per-process) node names."""
    with LocalStack(tmp_path_factory.mktemp("flower"), model_root, redis_binary=find_redis_server("system"),
                    workers=0, extra_env=ENV) as stack:
        stack.start_workers({"gpu0": {}, "gpu1": {}}, node_names=False)
        yield stack


def live_names(stack: LocalStack) -> list[str]:
    with Client(stack.api_url) as client:
        return sorted(w["name"] for w in client.workers())


def celery_cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "hotpipe", *args], capture_output=True, text=True,
                          env={**os.environ, **stack.env()}, timeout=120, cwd=stack.workdir)


def test_default_node_names_are_unique_per_process(fleet: LocalStack) -> None:
    names = live_names(fleet)
    assert len(names) == 2, names
    assert all(name.startswith("hotpipe-") for name in names), names


def test_a_live_workers_name_is_refused(fleet: LocalStack) -> None:
    taken = live_names(fleet)[0]
    proc = subprocess.run([sys.executable, "-m", "hotpipe", "worker", "--family", "stable-diffusion",
                           "--hostname", taken], capture_output=True, text=True, env={**os.environ, **fleet.env()},
                          timeout=180, cwd=fleet.workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"a worker named {taken} is already running" in proc.stderr
    assert "--hostname" in proc.stderr
    assert taken in live_names(fleet)  # the live one carries on


def test_celery_inspect_sees_every_worker(fleet: LocalStack) -> None:
    names = live_names(fleet)
    for command in ("active", "stats", "registered"):
        out = celery_cli(fleet, "inspect", command, "--json", "--timeout", "5")
        assert out.returncode == 0, out.stderr[-2000:]
        replies = json.loads(out.stdout)
        assert sorted(replies) == names, (command, out.stdout[:2000])
        if command == "registered":
            assert all(TASK_NAME in tasks for tasks in replies.values()), replies


@pytest.fixture(scope="module")
def flower(fleet: LocalStack) -> Iterator[str]:
    port = free_port()
    proc = spawn("flower", [sys.executable, "-m", "celery", "-A", "hotpipe", "flower", "--address=127.0.0.1",
                            f"--port={port}"], fleet.workdir,
                 # Flower 2 serves /api/* only with auth configured, or with this (loopback, a test)
                 {**fleet.env(), "FLOWER_UNAUTHENTICATED_API": "true"})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/healthcheck", timeout=1).status_code == 200, proc, 60)
        yield url
    finally:
        proc.stop()


def test_flower_lists_online_workers_and_the_jobs_they_ran(fleet: LocalStack, flower: str) -> None:
    names = live_names(fleet)
    wait_for(lambda: set(_online_workers(flower)) >= set(names), "Flower to see both workers online (heartbeats)",
             WAIT_S)
    with Client(fleet.api_url) as client:
        jobs = [client.submit({"checkpoint": "tiny-sd", "task": "text2image", "params": {
                    "prompt": f"flower {i}", "num_inference_steps": 2, "height": 32, "width": 32}}) for i in range(2)]
        records = [client.wait(job.id, timeout_s=WAIT_S) for job in jobs]
    assert all(r.status == Status.SUCCEEDED for r in records), records
    tasks = wait_for(lambda: _tasks_for(flower, [j.id for j in jobs]), "Flower to list both jobs' tasks", WAIT_S)
    for task in tasks.values():
        assert task["name"] == TASK_NAME
        assert task["state"] == "SUCCESS"
        assert task["runtime"] > 0
        assert task["worker"] in names


def _online_workers(flower: str) -> list[str]:
    time.sleep(0.2)
    rows = httpx.get(flower + "/workers", params={"json": 1}, timeout=10).json()["data"]
    return [row["hostname"] for row in rows if row.get("status")]


def _tasks_for(flower: str, job_ids: list[str]) -> dict[str, Any] | None:
    """Flower's tasks whose args carry one of ``job_ids``, once every job has a finished one."""
    time.sleep(0.2)
    tasks = httpx.get(flower + "/api/tasks", timeout=10).json()
    found = {job_id: task for task in tasks.values() for job_id in job_ids
             if job_id in str(task.get("args")) and task.get("state") == "SUCCESS"}
    return found if len(found) == len(job_ids) else None
