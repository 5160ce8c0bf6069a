"""The OpenAI Images API and the model catalog, driven by the official ``openai`` package.

Against the session's stack (API processes, a Celery worker, redis-server, the S3 server):
the SDK generates and edits with hotpipe's fields in ``extra_body``, its answers are real
images from real jobs that ``GET /v1/jobs`` lists, and its errors are the SDK's own
exception classes carrying OpenAI's error body.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest
from PIL import Image

from hotpipe.devstack import LocalStack, start_api
from hotpipe.producer.auth import hash_key, new_key
from hotpipe.producer.client import Client
from hotpipe.shared.status import Status

pytestmark = pytest.mark.e2e
SIZE = "64x64"
FAST = {"steps": 2}
#: a database of the session's redis-server that no worker consumes: jobs there stay queued
IDLE_DB = 5
KEY = new_key()


@pytest.fixture(scope="module")
def sdk(stack: LocalStack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.api_url + "/v1", api_key="unused-without-keys", max_retries=0,
                       timeout=180) as client:
        yield client


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def decoded(b64: str | None) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64 or "")))


def job_ids(response: openai.BaseModel) -> list[str]:
    ids: list[str] = (response.model_extra or {})["job_ids"]
    return ids


def test_generate_returns_urls_of_a_job_the_api_lists(sdk: openai.OpenAI, stack: LocalStack) -> None:
    result = sdk.images.generate(model="tiny-sd", prompt="a red cube", n=2, size=SIZE,
                                 extra_body={"seed": 3, "negative_prompt": "blurry", **FAST})
    images = [Image.open(io.BytesIO(httpx.get(item.url or "", timeout=30).content)) for item in result.data or []]
    (job_id,) = job_ids(result)
    with Client(stack.api_url) as client:
        record = client.get(job_id)
        listed = [r.id for r in client.list(limit=100).jobs]
    assert [(im.format, im.size) for im in images] == [("PNG", (64, 64))] * 2
    assert record.status is Status.SUCCEEDED and record.task.value == "text2image" and job_id in listed


def test_b64_json_carries_the_same_pixels_as_the_same_job_submitted_natively(sdk: openai.OpenAI,
                                                                             stack: LocalStack) -> None:
    seeded = {"seed": 21, "guidance_scale": 5.0, **FAST}
    first = sdk.images.generate(model="tiny-sd", prompt="a blue cube", size=SIZE, response_format="b64_json",
                                extra_body=seeded)
    other_seed = sdk.images.generate(model="tiny-sd", prompt="a blue cube", size=SIZE,
                                     response_format="b64_json", extra_body={**seeded, "seed": 22})
    with Client(stack.api_url) as client:
        native = client.submit({"checkpoint": "tiny-sd", "task": "text2image", "params": {
            "prompt": "a blue cube", "height": 64, "width": 64, "seed": 21, "guidance_scale": 5.0,
            "num_inference_steps": 2}})
        done = client.wait(native.id, timeout_s=120)
    digest = hashlib.sha256(base64.b64decode((first.data or [])[0].b64_json or "")).hexdigest()
    assert done.result is not None and done.result.images[0].sha256 == digest
    assert (other_seed.data or [])[0].b64_json != (first.data or [])[0].b64_json


def test_edit_with_a_mask_inpaints_and_without_one_is_image2image(sdk: openai.OpenAI, stack: LocalStack) -> None:
    image = png(Image.new("RGB", (64, 64), (200, 40, 40)))
    mask_im = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask_im.paste((0, 0, 0, 0), (16, 16, 48, 48))
    inpainted = sdk.images.edit(model="tiny-sd", image=("in.png", image, "image/png"),
                                mask=("mask.png", png(mask_im), "image/png"), prompt="a window",
                                response_format="b64_json", extra_body={"seed": 4, **FAST})
    varied = sdk.images.edit(model="tiny-sd", image=("in.png", image, "image/png"), prompt="a door",
                             size="32x32", response_format="b64_json",
                             extra_body={"seed": 4, "strength": 0.8, **FAST})
    with Client(stack.api_url) as client:
        tasks = [client.get(job_ids(r)[0]).task.value for r in (inpainted, varied)]
    assert tasks == ["inpainting", "image2image"]
    assert decoded((inpainted.data or [])[0].b64_json).size == (64, 64)
    assert decoded((varied.data or [])[0].b64_json).size == (32, 32)


def test_models_list_the_catalog(sdk: openai.OpenAI, stack: LocalStack) -> None:
    models = {m.id: m for m in sdk.models.list()}
    one = sdk.models.retrieve("tiny-sd")
    cli = subprocess.run([sys.executable, "-m", "hotpipe", "models", "--api", stack.api_url, "--json"],
                         capture_output=True, text=True, timeout=120)
    assert (models["tiny-sd"].model_extra or {})["tasks"] == ["text2image", "image2image", "inpainting"]
    assert (models["tiny-controlnet-sd"].model_extra or {})["family"] == "stable-diffusion"
    assert (one.model_extra or {})["family"] == "stable-diffusion"
    assert cli.returncode == 0, cli.stderr
    assert "tiny-sd" in {m["id"] for m in json.loads(cli.stdout)["data"]}


def test_bad_requests_are_the_sdk_s_own_errors_naming_the_parameter(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        sdk.images.generate(model="no-such-model", prompt="x", size=SIZE)
    with pytest.raises(openai.BadRequestError) as bad_size:
        sdk.images.generate(model="tiny-sd", prompt="x", size="100x100")
    with pytest.raises(openai.BadRequestError) as too_many:
        sdk.images.generate(model="tiny-sd", prompt="x", n=50)
    assert (unknown.value.code, unknown.value.param) == ("model_not_found", "model")
    assert (bad_size.value.param, too_many.value.param) == ("size", "n")


def test_a_failed_job_is_a_500_naming_it_and_its_error_code(sdk: openai.OpenAI, stack: LocalStack) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.images.generate(model="tiny-sd", prompt="too slow", size=SIZE,
                            extra_body={"timeout_s": 0.001, "steps": 50})
    body = failed.value.body
    assert isinstance(body, dict) and failed.value.status_code == 500
    (job_id,) = body["job_ids"]
    with Client(stack.api_url) as client:
        record = client.get(job_id)
    assert record.status is Status.FAILED and record.error is not None
    assert body["code"] == record.error.code == "timeout" and job_id in body["message"]


@pytest.fixture(scope="module")
def idle_api(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API with a key and a 1 s wait, on a database no worker consumes."""
    env = {**stack.env(), "HOTPIPE_REDIS_URL": stack.settings.redis_url.rsplit("/", 1)[0] + f"/{IDLE_DB}",
           "HOTPIPE_OPENAI_WAIT_S": "1", "HOTPIPE_API_KEYS": f"{hash_key(KEY)}:acme"}
    proc, url = start_api(tmp_path_factory.mktemp("idle-api"), env)
    try:
        yield url
    finally:
        proc.stop()


def test_past_the_wait_the_error_names_the_job_which_goes_on(idle_api: str) -> None:
    with openai.OpenAI(base_url=idle_api + "/v1", api_key=KEY, max_retries=2) as sdk, \
            pytest.raises(openai.InternalServerError) as late:
        sdk.images.generate(model="tiny-sd", prompt="a slow cube", size=SIZE)
    with openai.OpenAI(base_url=idle_api + "/v1", api_key="hp_wrong", max_retries=0) as stranger, \
            pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    body = late.value.body
    assert isinstance(body, dict) and late.value.status_code == 504
    (job_id,) = body["job_ids"]
    with Client(idle_api, api_key=KEY) as client:
        record = client.get(job_id)
        listed = [r.id for r in client.list().jobs]
    assert (record.status, record.tenant) == (Status.QUEUED, "acme")
    assert listed == [job_id]  # the SDK did not retry into a second job
