"""The OpenAI Images routes in-process over the real redis-server and S3 server.

Bad input is an OpenAI-shaped 4xx naming the OpenAI parameter, and leaves nothing behind (no
message, no record).  Good input becomes an ordinary job; with no worker consuming here, the
answer is the timeout error naming it, and the job is there to read and list.
"""

from __future__ import annotations

import dataclasses
import io
import random
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from hotpipe.producer.auth import hash_key, new_key
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from tests.producer.conftest import Backlog

GOOD = {"model": "tiny-sd", "prompt": "a red cube", "size": "64x64", "seed": 3, "steps": 2}
#: OpenAI's error object: exactly these keys (plus hotpipe's job_ids where a job is named)
ERROR_KEYS = {"message", "type", "param", "code"}


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def picture(size: tuple[int, int] = (64, 64)) -> bytes:
    return png(Image.new("RGB", size, (200, 30, 30)))


def openai_mask(size: tuple[int, int] = (64, 64)) -> bytes:
    """OpenAI's mask: opaque everywhere but a transparent left half (the area to repaint)."""
    im = Image.new("RGBA", size, (0, 0, 0, 255))
    im.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    return png(im)


def error_of(response: Any) -> dict[str, Any]:
    err: dict[str, Any] = response.json()["error"]
    assert set(err) >= ERROR_KEYS, err
    return err


@pytest.fixture
def quick(make_api: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    """The API waiting 0.2 s for a job (no worker consumes here)."""
    return make_api(dataclasses.replace(settings, openai_wait_s=0.2))


@pytest.mark.parametrize(("change", "status", "param", "code"), [
    ({"model": "no-such-checkpoint"}, 404, "model", "model_not_found"),
    ({"size": "100x100"}, 400, "size", "invalid_request"),
    ({"size": "big"}, 400, "size", "invalid_request"),
    ({"size": "4096x4096"}, 400, "size", "invalid_request"),
    ({"n": 5}, 400, "n", "invalid_request"),
    ({"n": 0}, 400, "n", "invalid_request"),
    ({"prompt": None}, 400, "prompt", "invalid_request"),
    ({"response_format": "jpeg"}, 400, "response_format", "invalid_request"),
    ({"steps": 100000}, 400, "num_inference_steps", "invalid_request"),
    ({"not_a_pipeline_argument": 1}, 400, "not_a_pipeline_argument", "invalid_request"),
    ({"priority": 12}, 400, "priority", "invalid_request"),
])
def test_bad_generations_are_openai_errors_naming_the_parameter_and_enqueue_nothing(
        api: TestClient, backlog: Callable[[], Backlog], change: dict[str, Any], status: int, param: str,
        code: str) -> None:
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    response = api.post("/v1/images/generations", json=body)
    err = error_of(response)
    assert (response.status_code, err["param"], err["code"]) == (status, param, code), err
    assert err["type"] == "invalid_request_error"
    assert backlog() == Backlog(0, 0)


def test_a_body_that_is_not_json_is_an_openai_error(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    response = api.post("/v1/images/generations", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "JSON" in error_of(response)["message"]
    assert backlog() == Backlog(0, 0)


def test_without_a_valid_key_the_error_is_openai_shaped(make_api: Callable[[Settings], TestClient],
                                                        settings: Settings, backlog: Callable[[], Backlog]) -> None:
    api = make_api(dataclasses.replace(settings, api_keys=f"{hash_key(new_key())}:acme"))
    no_key = api.post("/v1/images/generations", json=GOOD)
    wrong = api.get("/v1/models", headers={"Authorization": "Bearer hp_wrong"})
    for response in (no_key, wrong):
        err = error_of(response)
        assert (response.status_code, err["type"], err["code"]) == (401, "authentication_error", "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert backlog() == Backlog(0, 0)


def test_a_generation_is_a_job_and_the_timeout_names_it(quick: TestClient, backlog: Callable[[], Backlog]) -> None:
    response = quick.post("/v1/images/generations", json={**GOOD, "n": 2, "negative_prompt": "blurry"})
    err = error_of(response)
    assert (response.status_code, err["type"], err["code"]) == (504, "timeout", "job_wait_timeout")
    assert response.headers["x-should-retry"] == "false"  # the SDK would submit a second job
    (job_id,) = err["job_ids"]
    assert job_id in err["message"]
    record = quick.get(f"/v1/jobs/{job_id}").json()
    assert (record["status"], record["task"], record["checkpoint"]) == ("queued", "text2image", "tiny-sd")
    assert [j["id"] for j in quick.get("/v1/jobs").json()["jobs"]] == [job_id]
    assert backlog() == Backlog(1, 1)


def test_an_idempotency_key_makes_a_retry_wait_for_the_same_job(quick: TestClient,
                                                                 backlog: Callable[[], Backlog]) -> None:
    headers = {"Idempotency-Key": "openai-retry-1"}
    first = quick.post("/v1/images/generations", json=GOOD, headers=headers)
    again = quick.post("/v1/images/generations", json=GOOD, headers=headers)
    assert error_of(first)["job_ids"] == error_of(again)["job_ids"]
    assert backlog() == Backlog(1, 1)


def edit(api: TestClient, files: dict[str, bytes], **fields: str) -> Any:
    form = {"model": "tiny-sd", "prompt": "make it blue", **fields}
    parts = {name: (f"{name}.png", data, "image/png") for name, data in files.items()}
    return api.post("/v1/images/edits", data=form, files=parts)


@pytest.mark.parametrize(("files", "fields", "status", "param"), [
    ({}, {}, 400, "image"),
    ({"image": b"not an image"}, {}, 400, "image"),
    ({"image": picture(), "mask": png(Image.new("RGB", (64, 64)))}, {}, 400, "mask"),
    ({"image": picture(), "mask": openai_mask((32, 32))}, {}, 400, "mask"),
    ({"image": picture()}, {"size": "33x33"}, 400, "size"),
    ({"image": picture()}, {"n": "9"}, 400, "n"),
    ({"image": picture()}, {"model": "no-such-checkpoint"}, 404, "model"),
    ({"image": picture(), "other": picture()}, {}, 400, "other"),
])
def test_bad_edits_are_openai_errors_and_enqueue_nothing(api: TestClient, backlog: Callable[[], Backlog],
                                                         files: dict[str, bytes], fields: dict[str, str],
                                                         status: int, param: str) -> None:
    response = edit(api, files, **fields)
    err = error_of(response)
    assert (response.status_code, err["param"]) == (status, param), err
    assert backlog() == Backlog(0, 0)


def test_an_oversized_upload_is_a_413_naming_the_image(make_api: Callable[[Settings], TestClient],
                                                       settings: Settings, backlog: Callable[[], Backlog]) -> None:
    api = make_api(dataclasses.replace(settings, max_input_bytes=1000, openai_wait_s=0.2))
    noise = Image.frombytes("RGB", (64, 64), random.Random(1).randbytes(64 * 64 * 3))
    response = edit(api, {"image": png(noise)})
    err = error_of(response)
    assert (response.status_code, err["param"], err["code"]) == (413, "image", "body_too_large")
    assert backlog() == Backlog(0, 0)


def test_an_edit_with_a_mask_is_inpainting_with_the_mask_turned_white_where_transparent(
        quick: TestClient, storage: Storage, backlog: Callable[[], Backlog]) -> None:
    response = edit(quick, {"image": picture(), "mask": openai_mask()}, seed="5", strength="0.9", steps="4")
    (job_id,) = error_of(response)["job_ids"]
    record = quick.get(f"/v1/jobs/{job_id}").json()
    mask = Image.open(io.BytesIO(storage.get(f"jobs/{job_id}/inputs/mask_image.png")))
    assert record["task"] == "inpainting"
    assert (mask.mode, mask.size) == ("L", (64, 64))
    assert mask.getpixel((5, 30)) == 255 and mask.getpixel((60, 30)) == 0  # transparent half -> repaint
    assert backlog() == Backlog(1, 1)


def test_an_edit_without_a_mask_is_image2image_at_the_asked_size(quick: TestClient, storage: Storage) -> None:
    response = edit(quick, {"image[]": picture((80, 48))}, size="64x32", strength="0.5")
    (job_id,) = error_of(response)["job_ids"]
    image = Image.open(io.BytesIO(storage.get(f"jobs/{job_id}/inputs/image.png")))
    assert quick.get(f"/v1/jobs/{job_id}").json()["task"] == "image2image"
    assert image.size == (64, 32)


def test_a_body_over_the_server_bound_is_refused_in_openai_s_shape(make_api: Callable[[Settings], TestClient],
                                                                   settings: Settings,
                                                                   backlog: Callable[[], Backlog]) -> None:
    api = make_api(dataclasses.replace(settings, max_body_bytes=2000))
    response = edit(api, {"image": picture(), "mask": png(Image.frombytes("RGBA", (64, 64),
                                                                           random.Random(2).randbytes(64 * 64 * 4)))})
    err = error_of(response)
    assert (response.status_code, err["param"], err["code"]) == (413, "body", "body_too_large")
    assert api.post("/v1/jobs", content=b"x" * 3000).json()["error"]["field"] == "body"  # others keep ours
    assert backlog() == Backlog(0, 0)


@pytest.mark.parametrize(("change", "status", "error_type", "code"), [
    ({"rate_limit_per_s": 0.001, "rate_limit_burst": 1}, 429, "rate_limit_error", "rate_limited"),
    ({"checkpoint_allowlist": "other-*"}, 403, "permission_error", "checkpoint_not_allowed"),
])
def test_the_server_s_limits_hold_and_answer_in_openai_s_shape(
        make_api: Callable[[Settings], TestClient], settings: Settings, backlog: Callable[[], Backlog],
        change: dict[str, Any], status: int, error_type: str, code: str) -> None:
    api = make_api(dataclasses.replace(settings, openai_wait_s=0.2, **change))
    answers = [api.post("/v1/images/generations", json=GOOD) for _ in range(2)]
    refused = answers[-1]
    err = error_of(refused)
    assert (refused.status_code, err["type"], err["code"]) == (status, error_type, code), err
    if status == 429:
        assert int(refused.headers["Retry-After"]) >= 1
        assert backlog() == Backlog(1, 1)  # the first request's job only
    else:
        assert err["param"] == "model" and backlog() == Backlog(0, 0)


def test_with_redis_down_the_answer_is_openai_s_503_with_retry_after(
        make_api: Callable[[Settings], TestClient], settings: Settings) -> None:
    from hotpipe.devstack import free_port

    api = make_api(dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    response = api.post("/v1/images/generations", json=GOOD)
    err = error_of(response)
    assert (response.status_code, err["type"], err["code"]) == (503, "server_error", "unavailable")
    assert response.headers["Retry-After"] == "2"
