"""GET /v1/jobs/{id}/events: current state first, every change after, ends when terminal."""

from __future__ import annotations

import json
import threading
from typing import Any

import redis
from fastapi.testclient import TestClient

from hotpipe.shared.job import ImageResult, JobResult
from hotpipe.shared.settings import Settings
from hotpipe.shared.store import JobStore
from tests.jobs import claim

BODY = {"checkpoint": "tiny-sd", "task": "text2image", "params": {"prompt": "x", "num_inference_steps": 2}}
RESULT = JobResult(images=[ImageResult(key="jobs/x/0.png", width=8, height=8, content_type="image/png",
                                       sha256="0" * 64)])


def read_events(api: TestClient, job_id: str, first: threading.Event | None = None) -> list[tuple[str, dict[str, Any]]]:
    events, name = [], ""
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
                if first is not None:
                    first.set()
    return events


def drive_once_streaming(store: JobStore, job_id: str, first: threading.Event) -> threading.Thread:
    """Claim, report progress and succeed, once the stream has sent its first event."""

    def go() -> None:
        assert first.wait(30)
        attempt = claim(store, job_id)
        assert attempt is not None
        store.progress(job_id, attempt, 1, 2)
        store.progress(job_id, attempt, 2, 2)
        store.succeed(job_id, attempt, RESULT)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_stream_follows_the_job_to_its_end(api: TestClient, redis_client: redis.Redis, settings: Settings) -> None:
    job_id = api.post("/v1/jobs", json=BODY).json()["id"]
    first = threading.Event()
    thread = drive_once_streaming(JobStore(redis_client, settings.record_ttl_s), job_id, first)
    events = read_events(api, job_id, first)
    thread.join(5)

    assert [(name, rec["status"]) for name, rec in events] == [
        ("status", "queued"), ("status", "running"), ("progress", "running"), ("progress", "running"),
        ("status", "succeeded")]
    assert [rec["progress"]["step"] for name, rec in events if name == "progress"] == [1, 2]
    final = events[-1][1]["result"]["images"][0]
    assert final["key"] == "jobs/x/0.png" and final["url"].startswith("http")


def test_late_client_gets_the_final_state_and_the_stream_ends(api: TestClient, redis_client: redis.Redis,
                                                              settings: Settings) -> None:
    job_id = api.post("/v1/jobs", json=BODY).json()["id"]
    api.post(f"/v1/jobs/{job_id}/cancel")
    assert [(n, r["status"]) for n, r in read_events(api, job_id)] == [("status", "canceled")]


def test_unknown_job_is_404_json(api: TestClient) -> None:
    for job_id in ("0" * 32, "not-an-id"):
        response = api.get(f"/v1/jobs/{job_id}/events")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
