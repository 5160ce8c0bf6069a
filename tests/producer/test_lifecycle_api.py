"""The lifecycle API over real redis and S3: idempotency keys, client-chosen ids, listing,
uploads, deadlines and webhook settings on submit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from hotpipe.shared import keys
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from tests.producer.conftest import Backlog
from tests.producer.test_api import png, submit, text2image


# -- idempotency ----------------------------------------------------------------------------
def test_same_key_same_body_is_the_same_job_enqueued_once(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = api.post("/v1/jobs", json=text2image(seed=1), headers=headers)
    # the same request with its keys in another order is the same request
    again = api.post("/v1/jobs", json={"params": {"seed": 1, "prompt": "a red fox"}, "task": "text2image",
                                       "checkpoint": "tiny-sd"}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert backlog() == Backlog(queued=1, records=1)


def test_same_key_other_body_is_409_and_changes_nothing(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    headers = {"Idempotency-Key": "order-43"}
    first = api.post("/v1/jobs", json=text2image(seed=1), headers=headers)
    other = api.post("/v1/jobs", json=text2image(seed=2), headers=headers)
    assert other.status_code == 409
    err = other.json()["error"]
    assert (err["code"], err["field"]) == ("idempotency_conflict", "Idempotency-Key")
    assert first.json()["id"] in err["message"]
    assert backlog() == Backlog(queued=1, records=1)


def test_other_keys_and_no_key_make_new_jobs(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    ids = {api.post("/v1/jobs", json=text2image(seed=1), headers=h).json()["id"]
           for h in ({"Idempotency-Key": "a"}, {"Idempotency-Key": "b"}, {}, {})}
    assert len(ids) == 4 and backlog() == Backlog(queued=4, records=4)


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ünïcode"])
def test_a_malformed_key_is_422(api: TestClient, backlog: Callable[[], Backlog], key: str) -> None:
    response = api.post("/v1/jobs", json=text2image(), headers={b"Idempotency-Key": key.encode()})
    assert response.status_code == 422 and response.json()["error"]["field"] == "Idempotency-Key"
    assert backlog() == Backlog(queued=0, records=0)


def test_a_refused_request_does_not_use_up_its_key(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    headers = {"Idempotency-Key": "order-44"}
    assert api.post("/v1/jobs", json=text2image(num_inference_steps=0), headers=headers).status_code == 422
    fixed = api.post("/v1/jobs", json=text2image(num_inference_steps=2), headers=headers)
    assert fixed.status_code == 202 and backlog() == Backlog(queued=1, records=1)


def test_put_with_a_chosen_id_is_idempotent(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    first = api.put("/v1/jobs/batch-7_item-3", json=text2image(seed=1))
    again = api.put("/v1/jobs/batch-7_item-3", json=text2image(seed=1))
    other = api.put("/v1/jobs/batch-7_item-3", json=text2image(seed=2))
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 409)
    assert first.json()["id"] == again.json()["id"] == "batch-7_item-3"
    assert other.json()["error"]["code"] == "id_conflict"
    assert api.get("/v1/jobs/batch-7_item-3").json()["status"] == "queued"
    assert backlog() == Backlog(queued=1, records=1)


@pytest.mark.parametrize("job_id", ["-starts-with-dash", "has.dot", "x" * 65])
def test_put_with_a_bad_id_is_422(api: TestClient, backlog: Callable[[], Backlog], job_id: str) -> None:
    response = api.put(f"/v1/jobs/{job_id}", json=text2image())
    assert response.status_code == 422 and response.json()["error"]["field"] == "id"
    assert backlog() == Backlog(queued=0, records=0)


# -- listing --------------------------------------------------------------------------------
def test_listing_pages_newest_first_and_filters_by_status(api: TestClient) -> None:
    ids = [submit(api, text2image(seed=i))["id"] for i in range(5)]
    api.post(f"/v1/jobs/{ids[1]}/cancel")
    seen, cursor = [], None
    while True:
        page = api.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["jobs"]) <= 2
        seen += [job["id"] for job in page["jobs"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == ids[::-1]
    canceled = api.get("/v1/jobs", params={"status": "canceled"}).json()
    assert [job["id"] for job in canceled["jobs"]] == [ids[1]] and "next_cursor" not in canceled
    queued = api.get("/v1/jobs", params={"status": "queued"}).json()["jobs"]
    assert [job["id"] for job in queued] == [i for i in ids[::-1] if i != ids[1]]


@pytest.mark.parametrize(("params", "field"), [({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
                                               ({"status": "done"}, "status"), ({"cursor": "nope"}, "cursor")])
def test_bad_listing_parameters_are_422(api: TestClient, params: dict[str, Any], field: str) -> None:
    response = api.get("/v1/jobs", params=params)
    assert response.status_code == 422 and response.json()["error"]["field"] == field


def test_listing_reads_only_the_tenant_index(api: TestClient, redis_client: redis.Redis) -> None:
    job_id = submit(api, text2image())["id"]
    redis_client.zrem(keys.jobs_index(keys.DEFAULT_TENANT), job_id)  # no index entry: not listed
    assert api.get("/v1/jobs").json()["jobs"] == []


# -- uploads --------------------------------------------------------------------------------
def test_upload_returns_a_reference_inputs_accept(api: TestClient, storage: Storage, settings: Settings) -> None:
    image = png(64, 48, "blue")
    response = api.post("/v1/uploads", content=image, headers={"Content-Type": "image/png"})
    assert response.status_code == 201, response.text
    up = response.json()
    assert up["uri"] == f"s3://{settings.s3_bucket}/{up['key']}"
    assert up["key"].startswith(f"{settings.s3_prefix}/_uploads/{keys.DEFAULT_TENANT}/")
    assert (up["width"], up["height"], up["content_type"], up["size"]) == (64, 48, "image/png", len(image))
    assert storage.get(up["key"]) == image
    record = submit(api, {"checkpoint": "tiny-sd", "task": "image2image", "params": {"prompt": "x"},
                          "inputs": {"image": up["uri"]}})
    assert storage.get(f"{settings.s3_prefix}/{record['id']}/inputs/image.png") == image


def test_upload_that_is_not_an_image_is_422_and_stores_nothing(api: TestClient, storage: Storage,
                                                               settings: Settings) -> None:
    def uploads() -> int:
        listed = storage.client.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"{settings.s3_prefix}/_uploads/")
        return int(listed.get("KeyCount", 0))

    before = uploads()
    for body in (b"", b"not an image at all", png()[:40]):
        response = api.post("/v1/uploads", content=body, headers={"Content-Type": "image/png"})
        assert response.status_code == 422 and response.json()["error"]["field"] == "body"
    assert uploads() == before


def test_upload_over_the_input_limit_is_413(make_api: Callable[[Settings], TestClient], settings: Settings) -> None:
    small = make_api(dataclasses.replace(settings, max_input_bytes=1000))
    response = small.post("/v1/uploads", content=png(256, 256, "white") + b"\0" * 2000,
                          headers={"Content-Type": "image/png"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_s3_inputs_outside_our_prefix_are_refused(api: TestClient, settings: Settings) -> None:
    for uri in (f"s3://{settings.s3_bucket}/elsewhere/x.png", f"s3://other-bucket/{settings.s3_prefix}/x.png"):
        response = api.post("/v1/jobs", json={"checkpoint": "tiny-sd", "task": "image2image",
                                              "params": {"prompt": "x"}, "inputs": {"image": uri}})
        assert response.status_code == 422 and response.json()["error"]["field"] == "inputs.image"


# -- deadlines and webhooks on submit -------------------------------------------------------
def test_deadlines_are_recorded(api: TestClient, redis_client: redis.Redis, settings: Settings) -> None:
    record = submit(api, {**text2image(), "timeout_s": 30, "queue_timeout_s": 60})
    assert (record["timeout_s"], record["queue_timeout_s"]) == (30, 60)
    read = api.get(f"/v1/jobs/{record['id']}").json()
    assert read["queue_deadline"] > read["created_at"] and read["stage"] == "queued"
    assert redis_client.zscore(keys.queue_deadlines(), record["id"]) is not None
    job = JobStore(redis_client, settings.record_ttl_s).get(record["id"])
    assert job is not None and job.spec.timeout_s == 30


@pytest.mark.parametrize("bad", [{"timeout_s": 0}, {"queue_timeout_s": -1}, {"timeout_s": "10"}])
def test_bad_deadlines_are_422(api: TestClient, backlog: Callable[[], Backlog], bad: dict[str, Any]) -> None:
    response = api.post("/v1/jobs", json={**text2image(), **bad})
    assert response.status_code == 422 and response.json()["error"]["field"] == next(iter(bad))
    assert backlog() == Backlog(queued=0, records=0)


def test_webhooks_need_a_secret_on_the_server(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    response = api.post("/v1/jobs", json={**text2image(), "webhook_url": "https://hooks.example.com/x"})
    assert response.status_code == 422 and "HOTPIPE_WEBHOOK_SECRET" in response.json()["error"]["message"]
    assert backlog() == Backlog(queued=0, records=0)


@pytest.mark.parametrize(("url", "events"), [("http://127.0.0.1:9/x", None), ("http://10.0.0.1/x", None),
                                             ("ftp://example.com/x", None),
                                             ("https://hooks.example.com/x", ["finished"]),
                                             ("https://hooks.example.com/x", [])])
def test_bad_webhooks_are_422(make_api: Callable[[Settings], TestClient], settings: Settings,
                              backlog: Callable[[], Backlog], url: str, events: list[str] | None) -> None:
    hooked = make_api(dataclasses.replace(settings, webhook_secret="k", webhook_dispatcher=False))
    body: dict[str, Any] = {**text2image(), "webhook_url": url}
    if events is not None:
        body["webhook_events"] = events
    response = hooked.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"].startswith("webhook_")
    assert backlog() == Backlog(queued=0, records=0)


def test_loopback_webhooks_when_allowed(make_api: Callable[[Settings], TestClient], settings: Settings) -> None:
    hooked = make_api(dataclasses.replace(settings, webhook_secret="k", webhook_allow_private=True,
                                          webhook_dispatcher=False))
    record = submit(hooked, {**text2image(), "webhook_url": "http://127.0.0.1:9/x", "webhook_events": ["completed"]})
    assert "webhook_url" not in record  # never echoed: URLs can carry tokens


def test_concurrent_requests_with_one_key_create_one_job(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from hotpipe.producer.api import Services
    from hotpipe.producer.service import Submitter
    from hotpipe.shared.job import JobRequest

    svc: Services = api.app.state.services  # type: ignore[attr-defined]
    submitter = Submitter(svc.settings, svc.store, svc.storage)
    request = JobRequest.model_validate(text2image(seed=5))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: submitter.submit(request, idempotency_key="race"), range(8)))
    assert len({r.record.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert backlog() == Backlog(queued=1, records=1)
