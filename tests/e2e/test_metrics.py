"""Metrics and logs of the real processes: a job through the stack moves the API's and the worker's
/metrics, and every log line is JSON carrying the job id it is about."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.status import Status
from hotpipe.shared.store import JobStore
from tests.e2e.polling import wait_for

pytestmark = pytest.mark.e2e
FAMILY = "stable-diffusion"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Iterator[LocalStack]:
    """A stack of its own (so counts start at zero) whose processes log JSON, with two API
    processes; short leases, so a lost job is taken back within seconds."""
    env = {"HOTPIPE_LOG_FORMAT": "json", "HOTPIPE_LEASE_S": "3", "HOTPIPE_REAPER_INTERVAL_S": "1",
           "HOTPIPE_API_WORKERS": "2"}  # two API processes: /metrics must merge their counts
    with LocalStack(tmp_path_factory.mktemp("metrics"), model_root, redis_binary=find_redis_server("system"),
                    extra_env=env) as s:
        yield s


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def run_job(stack: LocalStack, seed: int) -> str:
    with Client(stack.api_url) as client:
        job = client.submit({"checkpoint": "tiny-sd", "task": "text2image",
                             "params": {"prompt": "a red cube", "num_inference_steps": 2, "height": 32, "width": 32,
                                        "seed": seed}})
        record = client.wait(job.id, timeout_s=120)
    assert record.status is Status.SUCCEEDED, record.error
    return job.id


def test_a_job_moves_the_api_and_worker_metrics(stack: LocalStack) -> None:
    api_url, worker_url = stack.api_url + "/metrics", stack.metrics_url("worker0")
    api_before, worker_before = scrape(api_url), scrape(worker_url)
    run_job(stack, seed=1)
    run_job(stack, seed=2)
    api, worker = scrape(api_url), scrape(worker_url)

    def moved(after: Samples, before: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(api, api_before, "hotpipe_jobs_submitted_total", family=FAMILY, priority="5") == 2
    assert moved(api, api_before, "hotpipe_http_requests_total", method="POST", route="/v1/jobs", status="202") == 2
    depth = ("hotpipe_queue_depth", frozenset({"family": FAMILY}.items()))
    assert depth in api and api[depth] == 0, "present, and nothing left queued"
    assert value(api, "hotpipe_jobs_running", family=FAMILY) == 0
    assert value(api, "hotpipe_redis_up") == 1

    assert moved(worker, worker_before, "hotpipe_worker_jobs_finished_total", family=FAMILY, status="succeeded") == 2
    for stage in ("queue_wait", "load", "run", "upload"):
        assert moved(worker, worker_before, "hotpipe_job_stage_seconds_count", family=FAMILY, stage=stage) == 2
        assert value(worker, "hotpipe_job_stage_seconds_bucket", family=FAMILY, stage=stage, le="+Inf") == \
            value(worker, "hotpipe_job_stage_seconds_count", family=FAMILY, stage=stage)
    # the first job loaded the checkpoint, the second found it hot
    assert value(worker, "hotpipe_cache_misses_total") == 1 and value(worker, "hotpipe_cache_hits_total") == 1
    assert value(worker, "hotpipe_cache_resident_pipelines") == 1
    assert value(worker, "hotpipe_worker_busy") == 0
    assert value(worker, "hotpipe_worker_info", family=FAMILY, device="cpu", version="0.1.0") == 1


def serving_processes(stack: LocalStack) -> int:
    """The API's worker processes: the children uvicorn spawned (its supervisor is the API process)."""
    pid = stack.procs["api"].popen.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum("spawn_main" in Path(f"/proc/{child}/cmdline").read_text() for child in children)


def test_two_api_processes_serve_and_every_scrape_counts_both(stack: LocalStack) -> None:
    assert serving_processes(stack) == 2
    before = scrape(stack.api_url + "/metrics")
    ids = []
    for seed in range(10):  # a new connection each: the kernel hands them to either process
        response = httpx.post(stack.api_url + "/v1/jobs", timeout=30, json={
            "checkpoint": "tiny-sd", "task": "text2image",
            "params": {"prompt": "a cube", "num_inference_steps": 1, "height": 32, "width": 32, "seed": seed}})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    with Client(stack.api_url) as client:
        assert {client.wait(job_id, timeout_s=120).status for job_id in ids} == {Status.SUCCEEDED}
    for _ in range(4):  # whichever process answers the scrape, it reports every process's submissions
        after = scrape(stack.api_url + "/metrics")
        assert value(after, "hotpipe_jobs_submitted_total", family=FAMILY, priority="5") - \
            value(before, "hotpipe_jobs_submitted_total", family=FAMILY, priority="5") == 10


def test_a_running_job_shows_on_the_api_and_the_worker(stack: LocalStack) -> None:
    seen: dict[str, float] = {}

    def running_seen() -> bool:
        api, worker = scrape(stack.api_url + "/metrics"), scrape(stack.metrics_url("worker0"))
        state = httpx.get(f"{stack.api_url}/v1/queues/{FAMILY}", timeout=10).json()
        seen.update(running=value(api, "hotpipe_jobs_running", family=FAMILY),
                    busy=value(worker, "hotpipe_worker_busy"), autoscaler=state["running"])
        return seen == {"running": 1, "busy": 1, "autoscaler": 1}

    with Client(stack.api_url) as client:
        job = client.submit({"checkpoint": "tiny-sd", "task": "text2image",
                             "params": {"prompt": "slow", "num_inference_steps": 150, "height": 64, "width": 64}})
        # until the job is seen running, or ends first (then the assertion below fails)
        while not running_seen() and not client.get(job.id).status.is_terminal():
            continue
        assert seen == {"running": 1, "busy": 1, "autoscaler": 1}
        client.cancel(job.id)
        assert client.wait(job.id, timeout_s=120).status is Status.CANCELED
    worker = scrape(stack.metrics_url("worker0"))
    assert value(worker, "hotpipe_worker_jobs_finished_total", family=FAMILY, status="canceled") == 1
    assert value(worker, "hotpipe_worker_busy") == 0


def test_log_lines_are_json_and_carry_the_id_of_the_job_they_are_about(stack: LocalStack) -> None:
    run_job(stack, seed=3)
    for name in ("api", "worker0"):
        lines = [line for line in stack.procs[name].log_path.read_text().splitlines() if line.strip()]
        docs = [json.loads(line) for line in lines]  # every line: Celery's shutdown prints are yet to come
        assert docs and all({"ts", "level", "logger", "message"} <= set(doc) for doc in docs), name
    worker = [json.loads(line) for line in stack.procs["worker0"].log_path.read_text().splitlines()]
    about_jobs = [(doc, re.search(r"\bjob ([0-9a-f]{32})\b", doc["message"])) for doc in worker]
    named = [(doc, match.group(1)) for doc, match in about_jobs if match]
    assert any("canceled during attempt" in doc["message"] for doc, _ in named)
    assert all(doc.get("job_id") == job_id for doc, job_id in named), named
    assert any(doc.get("job_id") and doc["logger"] == "hotpipe.workers.cache" for doc in worker), "the load"


def test_a_child_killed_mid_job_leaves_counters_and_drops_its_gauges(stack: LocalStack) -> None:
    before = scrape(stack.metrics_url("worker0"))
    store = JobStore(redis.Redis.from_url(stack.settings.redis_url, decode_responses=True), record_ttl_s=60)
    with Client(stack.api_url) as client:
        job = client.submit({"checkpoint": "tiny-sd", "task": "text2image",
                             "params": {"prompt": "slow", "num_inference_steps": 40, "height": 64, "width": 64}})
        child = wait_for(lambda: child_running(store, job.id), f"job {job.id} running")
        busy = scrape(stack.metrics_url("worker0"))
        os.kill(child, signal.SIGKILL)
        record = client.wait(job.id, timeout_s=300)  # the reaper requeues it, the new child runs it
    assert record.status is Status.SUCCEEDED and record.attempts == 2, record
    after = scrape(stack.metrics_url("worker0"))
    assert value(busy, "hotpipe_worker_busy") == 1
    assert value(after, "hotpipe_worker_busy") == 0, "the killed child's gauge is dropped"
    assert value(after, "hotpipe_reaper_jobs_total", outcome="queued") == 1
    succeeded = ("hotpipe_worker_jobs_finished_total", {"family": FAMILY, "status": "succeeded"})
    assert value(after, succeeded[0], **succeeded[1]) == value(before, succeeded[0], **succeeded[1]) + 1, (
        "what the killed child counted before still counts")


def child_running(store: JobStore, job_id: str) -> int | None:
    """The pool child's pid once the job is running mid-denoise."""
    found = store.get(job_id)
    if found is None or found.record.status is not Status.RUNNING or not found.worker or not found.record.progress:
        return None
    return int(found.worker.partition(" pid=")[2]) if found.record.progress.step >= 2 else None


def test_a_worker_with_metrics_off_serves_none_and_still_runs_jobs(stack: LocalStack) -> None:
    stack.procs["worker0"].stop()  # the job below must go to the worker under test
    quiet = stack.start_worker("quiet", {"HOTPIPE_WORKER_METRICS_PORT": "0"})
    run_job(stack, seed=4)
    lines = [json.loads(line) for line in quiet.log_path.read_text().splitlines() if line.startswith("{")]
    assert lines and not any("worker metrics on" in doc["message"] for doc in lines)
    assert any(doc["message"].startswith("worker metrics on") for doc in
               (json.loads(line) for line in stack.procs["worker0"].log_path.read_text().splitlines()
                if line.startswith("{")))
