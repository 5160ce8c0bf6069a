"""The API's /metrics over the real redis-server: submits, requests by route, queue figures from Redis."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import redis
from fastapi.testclient import TestClient
from kombu.transport.redis import Channel
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from hotpipe.devstack import free_port
from hotpipe.producer.metrics import QueueCollector, job_id_of
from hotpipe.shared import keys
from hotpipe.shared.celery_app import make_celery
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.queues import family_lists, priority_lists, worker_queue
from hotpipe.shared.registry import Registry, WorkerInfo
from hotpipe.shared.settings import Settings
from hotpipe.shared.store import JobStore
from tests.jobs import claim, job_spec
from tests.producer.conftest import Backlog

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
BODY = {"checkpoint": "tiny-sd", "task": "text2image", "params": {"prompt": "a lighthouse", "height": 64, "width": 64}}


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def scrape(api: TestClient) -> Samples:
    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_submits_and_requests_are_counted_by_family_route_and_status(api: TestClient,
                                                                     backlog: Callable[[], Backlog]) -> None:
    job = api.post("/v1/jobs", json={**BODY, "priority": 8})
    assert job.status_code == 202
    assert api.get(f"/v1/jobs/{job.json()['id']}").status_code == 200
    assert api.post("/v1/jobs", json={**BODY, "task": "paint"}).status_code == 422
    assert api.get("/no/such/path").status_code == 404
    found = scrape(api)
    assert value(found, "hotpipe_jobs_submitted_total", family="stable-diffusion", priority="8") == 1
    assert value(found, "hotpipe_jobs_submitted_total", family="stable-diffusion", priority="5") is None
    requests = {labels: v for (name, labels), v in found.items() if name == "hotpipe_http_requests_total"}
    assert requests == {
        frozenset({"method": "POST", "route": "/v1/jobs", "status": "202"}.items()): 1,
        frozenset({"method": "POST", "route": "/v1/jobs", "status": "422"}.items()): 1,
        frozenset({"method": "GET", "route": "/v1/jobs/{job_id}", "status": "200"}.items()): 1,
        frozenset({"method": "GET", "route": "unmatched", "status": "404"}.items()): 1,
    }
    assert value(found, "hotpipe_http_request_duration_seconds_count", method="POST", route="/v1/jobs",
                 status="202") == 1
    # read from Redis at scrape time: the one queued job, on the family's queue
    assert backlog().queued == 1
    assert value(found, "hotpipe_queue_depth", family="stable-diffusion") == 1
    assert value(found, "hotpipe_queue_depth", family="flux") == 0
    assert value(found, "hotpipe_jobs_running", family="stable-diffusion") == 0
    assert value(found, "hotpipe_redis_up") == 1


def test_a_body_too_large_is_counted_as_413(make_api: Callable[[Settings], TestClient], settings: Settings) -> None:
    api = make_api(dataclasses.replace(settings, max_body_bytes=1000))
    assert api.post("/v1/jobs", content=b"x" * 5000, headers={"content-type": "application/json"}).status_code == 413
    assert value(scrape(api), "hotpipe_http_requests_total", method="POST", route="unmatched", status="413") == 1


def collect(collector: QueueCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    return {(s.name, frozenset(s.labels.items())): s.value for m in registry.collect() for s in m.samples}


def running_job(store: JobStore, family: str) -> str:
    job_id = new_job_id()
    store.create(job_id, family=family, pipeline="StableDiffusionPipeline", checkpoint="x", revision=None,
                 task=Task.TEXT2IMAGE, spec=job_spec())
    assert claim(store, job_id) is not None
    return job_id


def test_queue_depth_sums_every_priority_list_and_running_jobs_come_from_the_leases(
        redis_client: redis.Redis) -> None:
    for step, name in enumerate(family_lists("stable-diffusion")):
        redis_client.rpush(name, *["message"] * (step + 1))  # 1 + 2 + ... + 10
    redis_client.rpush(family_lists("flux")[9], "message")
    store = JobStore(redis_client, record_ttl_s=60)
    for family in ("stable-diffusion", "stable-diffusion", "if", "a-family-no-table-has"):
        running_job(store, family)
    found = collect(QueueCollector(redis_client, ["stable-diffusion", "flux", "if"]))
    assert value(found, "hotpipe_queue_depth", family="stable-diffusion") == 55
    assert value(found, "hotpipe_queue_depth", family="flux") == 1
    assert value(found, "hotpipe_queue_depth", family="if") == 0
    assert value(found, "hotpipe_jobs_running", family="stable-diffusion") == 2
    assert value(found, "hotpipe_jobs_running", family="if") == 1
    assert value(found, "hotpipe_jobs_running", family="a-family-no-table-has") == 1
    assert value(found, "hotpipe_jobs_running", family="flux") == 0
    assert redis_client.zcard(keys.leases()) == 4


def test_redis_down_is_a_gauge_not_a_failed_scrape() -> None:
    down = redis.Redis(port=free_port(), socket_connect_timeout=1)
    found = collect(QueueCollector(down, ["stable-diffusion"]))
    assert found == {("hotpipe_redis_up", frozenset()): 0}


def test_job_ids_are_read_from_job_paths_only() -> None:
    job = "0123456789abcdef0123456789abcdef"
    assert job_id_of(f"/v1/jobs/{job}") == job_id_of(f"/v1/jobs/{job}/events") == job
    assert job_id_of("/v1/jobs") is None and job_id_of("/v1/jobs/../etc") is None and job_id_of("/metrics") is None


def test_queue_state_is_what_the_autoscaler_reads(api: TestClient, redis_client: redis.Redis) -> None:
    for name in family_lists("stable-diffusion")[3:6]:
        redis_client.rpush(name, "message")
    running_job(JobStore(redis_client, record_ttl_s=60), "stable-diffusion")
    state = api.get("/v1/queues/stable-diffusion")
    assert state.status_code == 200
    assert state.json() == {"family": "stable-diffusion", "queued": 3, "running": 1}
    assert api.get("/v1/queues/flux").json() == {"family": "flux", "queued": 0, "running": 0}


def test_jobs_waiting_in_live_workers_own_queues_count_for_their_families(api: TestClient,
                                                                          redis_client: redis.Redis) -> None:
    registry = Registry(redis_client, ttl_s=60)
    for name, families in (("a@h", ["stable-diffusion"]), ("b@h", ["stable-diffusion", "flux"]),
                           ("c@h", ["kandinsky22"])):
        registry.publish(WorkerInfo(name=name, queue=worker_queue(name), families=families, device="cpu", ready=True))
        redis_client.rpush(priority_lists(worker_queue(name))[4], "message")
    redis_client.rpush(priority_lists(worker_queue("dead@h"))[0], "message")  # no record: the reaper drains it
    redis_client.rpush(family_lists("stable-diffusion")[0], "message")
    queued = {f: api.get(f"/v1/queues/{f}").json()["queued"] for f in ("stable-diffusion", "flux", "kandinsky22")}
    assert queued == {"stable-diffusion": 3, "flux": 1, "kandinsky22": 1}
    metrics = api.get("/metrics").text
    assert 'hotpipe_queue_depth{family="stable-diffusion"} 3.0' in metrics


def test_queue_state_of_a_family_without_a_queue_says_where_its_jobs_go(api: TestClient) -> None:
    variant = api.get("/v1/queues/stable-diffusion-xl-controlnet")
    assert variant.status_code == 404
    assert variant.json()["error"]["message"] == (
        "family 'stable-diffusion-xl-controlnet' has no queue of its own; its jobs run on 'stable-diffusion-xl''s")
    unknown = api.get("/v1/queues/nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "family"
    assert "families with a queue: " in unknown.json()["error"]["message"]


def test_the_lists_counted_are_the_lists_kombu_fills() -> None:
    steps = make_celery(Settings()).conf.broker_transport_options["priority_steps"]
    kombus = [f"stable-diffusion{Channel.sep}{step}" if step else "stable-diffusion" for step in steps]
    assert family_lists("stable-diffusion") == kombus and len(kombus) == 10
