"""The HTTP API over real redis and S3: submit, read, wait, cancel, health, docs."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import redis
from fastapi.testclient import TestClient
from PIL import Image

from hotpipe.producer.api import create_app
from hotpipe.shared.celery_app import TASK_NAME
from hotpipe.shared.job import ImageResult, JobResult, new_job_id
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from tests.jobs import claim
from tests.producer.conftest import FAMILY, Backlog, queue_lists

Request = dict[str, Any]


def png(width: int = 64, height: int = 64, color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def text2image(**params: Any) -> Request:
    return {"checkpoint": "tiny-sd", "task": "text2image", "params": {"prompt": "a red fox", **params}}


def image2image(image: str, **params: Any) -> Request:
    return {"checkpoint": "tiny-sd", "task": "image2image", "params": {"prompt": "a red fox", **params},
            "inputs": {"image": image}}


def submit(api: TestClient, body: Request) -> dict[str, Any]:
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    record: dict[str, Any] = response.json()
    return record


def queued_messages(client: redis.Redis) -> list[dict[str, Any]]:
    """Every message on the family's queue lists, as kombu stored them."""
    raw: list[str] = []
    for name in queue_lists():
        raw += client.lrange(name, 0, -1)  # type: ignore[arg-type]
    return [json.loads(m) for m in raw]


def task_args(message: dict[str, Any]) -> list[Any]:
    """The positional args of a Celery protocol-2 message (body: [args, kwargs, embed])."""
    assert message["properties"]["body_encoding"] == "base64"
    args: list[Any] = json.loads(base64.b64decode(message["body"]))[0]
    return args


# -- submit + read ------------------------------------------------------------------------

def test_text2image_is_queued_recorded_and_enqueued_once(api: TestClient, redis_client: redis.Redis,
                                                         backlog: Callable[[], Backlog]) -> None:
    record = submit(api, text2image(num_inference_steps=2, seed=7))

    assert record["status"] == "queued"
    assert record["family"] == FAMILY
    assert record["pipeline"] == "StableDiffusionPipeline"
    assert record["checkpoint"] == "tiny-sd"
    assert record["task"] == "text2image"
    assert record["attempts"] == 0
    assert len(record["id"]) == 32
    assert backlog() == Backlog(queued=1, records=1)
    [message] = queued_messages(redis_client)
    assert message["headers"]["task"] == TASK_NAME
    assert task_args(message) == [record["id"]]


def test_get_returns_the_record_post_returned(api: TestClient) -> None:
    record = submit(api, text2image())

    response = api.get(f"/v1/jobs/{record['id']}")

    assert response.status_code == 200
    assert response.json() == record


def test_record_keeps_the_params_and_a_seed(api: TestClient, redis_client: redis.Redis, settings: Settings) -> None:
    record = submit(api, text2image(num_inference_steps=3, guidance_scale=5.0, height=64, width=128))

    job = JobStore(redis_client, settings.record_ttl_s).get(record["id"])

    assert job is not None
    params = job.spec.params
    assert params["num_inference_steps"] == 3
    assert params["guidance_scale"] == 5.0
    assert (params["height"], params["width"]) == (64, 128)
    assert isinstance(params["seed"], int)  # drawn by the producer when the caller gave none
    assert job.spec.resolved.source == "local"
    assert job.spec.inputs == {}


def test_record_and_spec_name_the_chosen_scheduler(api: TestClient, redis_client: redis.Redis,
                                                  settings: Settings) -> None:
    body = {**text2image(), "scheduler": "DPM++ 2M Karras", "scheduler_config": {"timestep_spacing": "trailing"}}
    record = submit(api, body)

    chosen = {"name": "DPMSolverMultistepScheduler", "sampler": "DPM++ 2M Karras",
              "config": {"use_karras_sigmas": True, "timestep_spacing": "trailing"}}
    assert record["scheduler"] == chosen
    assert api.get(f"/v1/jobs/{record['id']}").json()["scheduler"] == chosen
    job = JobStore(redis_client, settings.record_ttl_s).get(record["id"])
    assert job is not None and job.spec.scheduler is not None
    assert job.spec.scheduler.model_dump() == chosen
    assert "scheduler" not in submit(api, text2image())  # the checkpoint's own


def test_each_submit_is_a_new_job(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    first, second = submit(api, text2image()), submit(api, text2image())

    assert first["id"] != second["id"]
    assert backlog() == Backlog(queued=2, records=2)


def test_get_unknown_job_is_404_json(api: TestClient) -> None:
    response = api.get(f"/v1/jobs/{new_job_id()}")

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert error["field"] == "id"
    assert error["message"]


def test_get_malformed_id_is_404(api: TestClient) -> None:
    for job_id in ("not-a-job", "ABCDEF" * 6, "hotpipe:job:x", "0" * 33):
        response = api.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 404, job_id
        assert response.json()["error"]["code"] == "not_found"


def test_unknown_route_and_method_are_json_errors(api: TestClient) -> None:
    missing = api.get("/v1/nothing-here")
    wrong_method = api.delete(f"/v1/jobs/{new_job_id()}")

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


# -- cancel -------------------------------------------------------------------------------

def test_cancel_queued_job_then_cancel_again(api: TestClient) -> None:
    job_id = submit(api, text2image())["id"]

    first = api.post(f"/v1/jobs/{job_id}/cancel")
    second = api.post(f"/v1/jobs/{job_id}/cancel")

    assert first.status_code == 202
    assert first.json()["status"] == "canceled"
    assert "finished_at" in first.json()
    assert second.status_code == 202
    assert second.json()["status"] == "canceled"
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled"


def test_cancel_unknown_job_is_404(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    response = api.post(f"/v1/jobs/{new_job_id()}/cancel")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert backlog() == Backlog(queued=0, records=0)


def test_cancel_running_job_flags_it(api: TestClient, redis_client: redis.Redis, settings: Settings) -> None:
    job_id = submit(api, text2image())["id"]
    assert claim(JobStore(redis_client, settings.record_ttl_s), job_id) == 1

    response = api.post(f"/v1/jobs/{job_id}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True


def test_cancel_succeeded_job_is_409(api: TestClient, redis_client: redis.Redis, settings: Settings,
                                     storage: Storage) -> None:
    job_id = submit(api, text2image())["id"]
    store = JobStore(redis_client, settings.record_ttl_s)
    attempt = claim(store, job_id)
    assert attempt is not None
    key = storage.image_key(job_id, 0, "png")
    store.succeed(job_id, attempt, JobResult(images=[ImageResult(key=key, width=64, height=64,
                                                                 content_type="image/png", sha256="0" * 64)]))

    response = api.post(f"/v1/jobs/{job_id}/cancel")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert "succeeded" in error["message"]
    after = api.get(f"/v1/jobs/{job_id}").json()
    assert after["status"] == "succeeded"
    assert after["cancel_requested"] is False
    assert after["result"]["images"][0]["key"] == key
    assert after["result"]["images"][0]["url"].startswith(settings.s3_endpoint_url or "")


# -- wait ---------------------------------------------------------------------------------

def test_short_wait_on_queued_job_returns_it_queued(api: TestClient) -> None:
    job_id = submit(api, text2image())["id"]

    response = api.get(f"/v1/jobs/{job_id}", params={"wait": 0.2})

    assert response.status_code == 200
    assert response.json()["status"] == "queued"


def test_wait_on_terminal_job_returns_it(api: TestClient) -> None:
    job_id = submit(api, text2image())["id"]
    api.post(f"/v1/jobs/{job_id}/cancel")

    response = api.get(f"/v1/jobs/{job_id}", params={"wait": 5})

    assert response.status_code == 200
    assert response.json()["status"] == "canceled"


def test_wait_above_max_is_422_naming_wait(api: TestClient, settings: Settings) -> None:
    job_id = submit(api, text2image())["id"]

    response = api.get(f"/v1/jobs/{job_id}", params={"wait": settings.wait_max_s + 1})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "wait"
    assert str(settings.wait_max_s) in error["message"]


def test_negative_or_non_numeric_wait_is_422(api: TestClient) -> None:
    job_id = submit(api, text2image())["id"]

    for wait in ("-1", "soon"):
        response = api.get(f"/v1/jobs/{job_id}", params={"wait": wait})
        assert response.status_code == 422, wait
        assert response.json()["error"]["field"].split(".")[-1] == "wait"


# -- inputs -------------------------------------------------------------------------------

def test_image2image_data_uri_input_is_stored_in_s3(api: TestClient, storage: Storage, redis_client: redis.Redis,
                                                    settings: Settings, backlog: Callable[[], Backlog]) -> None:
    image = png(96, 64)

    record = submit(api, image2image(data_uri(image), strength=0.5))

    assert record["pipeline"] == "StableDiffusionImg2ImgPipeline"
    key = f"{settings.s3_prefix}/{record['id']}/inputs/image.png"
    assert storage.get(key) == image
    job = JobStore(redis_client, settings.record_ttl_s).get(record["id"])
    assert job is not None
    assert job.spec.inputs == {"image": key}
    assert backlog() == Backlog(queued=1, records=1)


def test_image2image_s3_reference_is_accepted(api: TestClient, storage: Storage, settings: Settings) -> None:
    image = png(64, 64, "blue")
    upload = f"{settings.s3_prefix}/uploads/{uuid.uuid4().hex}.png"
    storage.put(upload, image, "image/png")

    record = submit(api, image2image(f"s3://{settings.s3_bucket}/{upload}"))

    assert record["status"] == "queued"
    assert storage.get(f"{settings.s3_prefix}/{record['id']}/inputs/image.png") == image


def test_inpainting_stores_image_and_mask(api: TestClient, storage: Storage, settings: Settings) -> None:
    image, mask = png(64, 64, "green"), png(64, 64, "white")
    body = {"checkpoint": "tiny-sd", "task": "inpainting", "params": {"prompt": "a cat"},
            "inputs": {"image": data_uri(image), "mask_image": data_uri(mask)}}

    record = submit(api, body)

    assert record["pipeline"] == "StableDiffusionInpaintPipeline"
    prefix = f"{settings.s3_prefix}/{record['id']}/inputs"
    assert storage.get(f"{prefix}/image.png") == image
    assert storage.get(f"{prefix}/mask_image.png") == mask


# -- health and docs ----------------------------------------------------------------------

def test_health_and_readiness(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_docs_and_openapi(api: TestClient) -> None:
    docs = api.get("/docs")
    schema = api.get("/openapi.json")

    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    assert schema.status_code == 200
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel"} <= set(schema.json()["paths"])


def test_redis_down_is_503_with_retry_after(settings: Settings) -> None:
    # Nothing listens on port 1: every Redis call fails to connect.
    down = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(down)) as api:
        ready = api.get("/readyz")
        listed = api.get("/v1/jobs")

    for answer in (ready, listed):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "2"
        assert answer.json()["error"]["code"] == "unavailable"
