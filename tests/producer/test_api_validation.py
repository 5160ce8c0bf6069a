"""Bad requests to ``POST /v1/jobs``: each is a 4xx JSON error naming the field, and changes nothing.

"Changes nothing" is read from the real services: no message on the family's Celery
queue, no job record in redis, no new object in the bucket.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import random
import shutil
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.testclient import httpx as testclient_httpx

from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from tests.producer.conftest import Backlog

Request = dict[str, Any]
#: the httpx flavour (httpx or httpx2) that TestClient answers with
Response = testclient_httpx.Response

#: the root conftest's settings use this bucket and prefix
BUCKET, PREFIX = "hotpipe-test", "jobs"
#: made in model_root by the ``odd_checkpoints`` fixture for the duration of each test
SYMLINK_OUT = "escape-link"
SHAPE = "shap-e-img2img"
#: a LoRA folder holding only pickle weights, made by ``odd_checkpoints``
PICKLE_LORA = "pickle-only-lora"


# -- images ----------------------------------------------------------------------------------

def encoded(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims ``width`` x ``height``, in a few dozen bytes."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


PNG_64 = encoded(Image.new("RGB", (64, 64), "red"))
PNG_32 = encoded(Image.new("L", (32, 32), 255))
NOISY = encoded(Image.frombytes("RGB", (64, 64), random.Random(0).randbytes(64 * 64 * 3)))
TRUNCATED = NOISY[: len(NOISY) // 2]
GIF = encoded(Image.new("RGB", (16, 16), "blue"), "GIF")
BOMB = png_bomb(65_535, 65_535)
# decodes to more pixels than Settings.max_input_pixels (4096*4096) from a few kilobytes
OVER_PIXELS = encoded(Image.new("1", (4104, 4104), 0))
assert len(BOMB) < 200
assert len(OVER_PIXELS) < 64 * 1024
IMAGE = data_uri(PNG_64)


# -- requests --------------------------------------------------------------------------------

def text2image(**params: Any) -> Request:
    return {"checkpoint": "tiny-sd", "task": "text2image", "params": {"prompt": "a red fox", **params}}


def image2image(image: str | None = IMAGE, **params: Any) -> Request:
    inputs = {"image": image} if image is not None else {}
    return {"checkpoint": "tiny-sd", "task": "image2image", "params": {"prompt": "a red fox", **params},
            "inputs": inputs}


def inpainting(image: str = IMAGE, mask: str | None = IMAGE) -> Request:
    inputs = {"image": image, **({"mask_image": mask} if mask is not None else {})}
    return {"checkpoint": "tiny-sd", "task": "inpainting", "params": {"prompt": "a red fox"}, "inputs": inputs}


def controlled(controlnet: str) -> Request:
    """text2image on tiny-sd with a ControlNet checkpoint and a control image."""
    return with_(text2image(), controlnet=controlnet, inputs={"control_image": IMAGE})


def on(checkpoint: str) -> Request:
    return {**text2image(), "checkpoint": checkpoint}


def with_(body: Request, **fields: Any) -> Request:
    return {**body, **fields}


def without(body: Request, *path: str) -> Request:
    out = json.loads(json.dumps(body))
    *parents, last = path
    target = out
    for p in parents:
        target = target[p]
    del target[last]
    result: Request = out
    return result


def raw(body: Request, **literals: str) -> bytes:
    """``body`` as JSON text where the string ``"@name"`` is replaced by a bare literal (NaN, Infinity)."""
    text = json.dumps(body)
    for name, literal in literals.items():
        text = text.replace(json.dumps(f"@{name}"), literal)
    return text.encode()


@dataclass(frozen=True)
class Case:
    body: Request | bytes | list[Any]
    field: str
    statuses: tuple[int, ...] = (422,)
    code: str | None = None
    says: str | None = None


def case(id: str, body: Request | bytes | list[Any], field: str, statuses: tuple[int, ...] = (422,),
         code: str | None = None, says: str | None = None) -> Any:
    return pytest.param(Case(body, field, statuses, code, says), id=id)


TOO_LONG = "x" * 10 * 1024 * 1024

CASES = [
    # -- shape of the request
    case("unknown-top-level-field", with_(text2image(), urgency=5), "urgency"),
    case("priority-above-9", with_(text2image(), priority=10), "priority"),
    case("priority-as-string", with_(text2image(), priority="high"), "priority"),
    case("unknown-param", text2image(sampler="euler"), "params.sampler"),
    case("unknown-input", with_(text2image(), inputs={"depth_map": IMAGE}), "inputs.depth_map"),
    case("missing-prompt", without(text2image(), "params", "prompt"), "params.prompt", says="required"),
    case("empty-prompt", text2image(prompt=""), "params.prompt"),
    case("missing-task", without(text2image(), "task"), "task", says="required"),
    case("bad-task", with_(text2image(), task="text2video"), "task"),
    case("missing-checkpoint", without(text2image(), "checkpoint"), "checkpoint"),
    case("missing-params", without(text2image(), "params"), "params"),
    case("params-not-an-object", with_(text2image(), params="a red fox"), "params"),
    case("inputs-a-list", with_(text2image(), inputs=[IMAGE]), "inputs"),
    case("bad-output-format", with_(text2image(), output_format="gif"), "output_format"),
    case("body-is-a-list", [text2image()], "body"),
    case("malformed-json", b'{"checkpoint": "tiny-sd", "task": ', "body", statuses=(400, 422)),
    # -- wrong types: no silent coercion
    case("steps-as-string", text2image(num_inference_steps="20"), "params.num_inference_steps"),
    case("steps-as-float", text2image(num_inference_steps=20.5), "params.num_inference_steps"),
    case("seed-as-bool", text2image(seed=True), "params.seed"),
    case("prompt-as-list", text2image(prompt=["a", "fox"]), "params.prompt"),
    case("guidance-as-string", text2image(guidance_scale="7.5"), "params.guidance_scale"),
    case("guidance-as-bool", text2image(guidance_scale=True), "params.guidance_scale"),
    case("height-as-float", text2image(height=512.0), "params.height"),
    # -- out-of-range numbers
    case("steps-negative", text2image(num_inference_steps=-5), "params.num_inference_steps"),
    case("steps-zero", text2image(num_inference_steps=0), "params.num_inference_steps"),
    case("guidance-negative", text2image(guidance_scale=-1.0), "params.guidance_scale"),
    case("seed-negative", text2image(seed=-1), "params.seed"),
    case("seed-over-64-bits", text2image(seed=2**64), "params.seed"),
    case("num-images-zero", text2image(num_images=0), "params.num_images"),
    case("guidance-nan", raw(text2image(guidance_scale="@x"), x="NaN"), "params.guidance_scale",
         statuses=(400, 422)),
    case("guidance-infinity", raw(text2image(guidance_scale="@x"), x="Infinity"), "params.guidance_scale",
         statuses=(400, 422)),
    case("steps-infinity", raw(text2image(num_inference_steps="@x"), x="Infinity"), "params.num_inference_steps",
         statuses=(400, 422)),
    case("width-minus-infinity", raw(text2image(width="@x"), x="-Infinity"), "params.width", statuses=(400, 422)),
    case("strength-nan", raw(image2image(strength="@x"), x="NaN"), "params.strength", statuses=(400, 422)),
    case("strength-zero", image2image(strength=0.0), "params.strength"),
    # -- this deployment's limits (Settings defaults)
    case("steps-over-max", text2image(num_inference_steps=151), "params.num_inference_steps", says="150"),
    case("height-not-multiple-of-8", text2image(height=100), "params.height"),
    case("height-over-max-side", text2image(height=4096), "params.height", says="2048"),
    case("width-over-contract", text2image(width=16384 + 8), "params.width"),
    case("num-images-over-max", text2image(num_images=5), "params.num_images", says="4"),
    case("prompt-10mb", text2image(prompt=TOO_LONG), "params.prompt", statuses=(413, 422)),
    case("negative-prompt-too-long", text2image(negative_prompt="x" * 4001), "params.negative_prompt"),
    # -- parameters and inputs the task's pipeline does not take
    case("strength-on-text2image", text2image(strength=0.5), "params.strength", says="StableDiffusionPipeline"),
    case("height-on-image2image", image2image(height=64), "params.height", says="StableDiffusionImg2ImgPipeline"),
    case("image2image-without-image", image2image(None), "inputs.image", says="required"),
    case("inpainting-without-mask", inpainting(mask=None), "inputs.mask_image", says="required"),
    case("text2image-with-image", with_(text2image(), inputs={"image": IMAGE}), "inputs.image"),
    case("control-image-without-controlnet", with_(text2image(), inputs={"control_image": IMAGE}),
         "inputs.control_image"),
    case("controlnet-without-control-image", with_(text2image(), controlnet="tiny-controlnet-sd"),
         "inputs.control_image", says="required when controlnet is set"),
    case("controlnet-is-a-pipeline", controlled("tiny-sdxl"), "controlnet", code="invalid_checkpoint",
         says="is a Diffusers pipeline (StableDiffusionXLPipeline), not a ControlNet model"),
    case("controlnet-for-another-family", controlled("tiny-controlnet-sdxl"), "controlnet",
         says="made for stable-diffusion-xl, but checkpoint 'tiny-sd' is stable-diffusion"),
    case("controlnet-unknown", controlled("no-such-controlnet"), "controlnet", code="checkpoint_not_found"),
    case("controlnet-escape", controlled("../tiny-controlnet-sd"), "controlnet", code="invalid_checkpoint"),
    case("controlnet-on-a-family-without", with_(controlled("tiny-controlnet-sd"), checkpoint="tiny-pixart-sigma"),
         "controlnet", code="unsupported_variant", says="family pixart-sigma has no ControlNet pipeline"),
    case("pag-on-a-family-without", with_(text2image(), checkpoint="tiny-chroma", enable_pag=True), "enable_pag",
         code="unsupported_variant", says="family chroma has no PAG pipeline for text2image"),
    case("pag-as-string", with_(text2image(), enable_pag="yes"), "enable_pag"),
    # -- pass-through parameters: what the pipeline takes, never what only hotpipe sets
    case("passthrough-not-accepted", text2image(pag_scale=3.0), "params.pag_scale",
         says="not accepted by StableDiffusionPipeline"),
    case("passthrough-generator", text2image(generator=1), "params.generator", says="use params.seed"),
    case("passthrough-output-type", text2image(output_type="latent"), "params.output_type"),
    case("passthrough-latents", text2image(latents=[0.0]), "params.latents", says="tensors"),
    case("passthrough-prompt-embeds", text2image(prompt_embeds=[[0.1]]), "params.prompt_embeds"),
    case("passthrough-callback", text2image(callback_on_step_end="print"), "params.callback_on_step_end"),
    case("passthrough-object", text2image(guidance_rescale={"x": 1}), "params.guidance_rescale"),
    case("passthrough-long-list", text2image(guidance_rescale=[0.1] * 17), "params.guidance_rescale"),
    case("steps-times-strength-below-1", image2image(num_inference_steps=4, strength=0.2), "params.strength",
         says="4 x 0.2 = 0.8"),
    case("default-strength-times-steps-below-1", with_(image2image(num_inference_steps=3), checkpoint="tiny-sdxl"),
         "params.strength", says="3 x 0.3 = 0.9"),
    # Kandinsky 2.2's combined img2img pipeline passes steps on to a decoder that keeps int(2 x 0.3) = 0
    case("kandinsky22-default-strength-times-steps-below-1",
         with_(image2image(num_inference_steps=2), checkpoint="tiny-kandinsky22-decoder"), "params.strength",
         says="KandinskyV22Img2ImgCombinedPipeline"),
    # -- scheduler
    case("scheduler-unknown", with_(text2image(), scheduler="Karras-of-doom"), "scheduler",
         says="EulerAncestralDiscreteScheduler"),
    case("scheduler-incompatible", with_(text2image(), scheduler="FlowMatchEulerDiscreteScheduler"), "scheduler",
         says="DPM++ 2M Karras"),
    case("scheduler-on-a-combined-pipeline", with_(text2image(), checkpoint="tiny-kandinsky22-decoder",
                                                   scheduler="Euler a"), "scheduler", says="remove scheduler"),
    case("scheduler-not-a-string", with_(text2image(), scheduler=["Euler a"]), "scheduler"),
    case("scheduler-config-without-scheduler", with_(text2image(), scheduler_config={"use_karras_sigmas": True}),
         "scheduler_config"),
    case("scheduler-config-unknown-option", with_(text2image(), scheduler="Euler a", scheduler_config={"karras": 1}),
         "scheduler_config.karras"),
    case("scheduler-config-training-arg", with_(text2image(), scheduler="DPM++ 2M",
                                                scheduler_config={"num_train_timesteps": 10**9}),
         "scheduler_config.num_train_timesteps"),
    case("scheduler-config-bad-choice", with_(text2image(), scheduler="DPM++ 2M",
                                              scheduler_config={"algorithm_type": "deis"}),
         "scheduler_config.algorithm_type"),
    case("scheduler-config-wrong-kind", with_(text2image(), scheduler="DPM++ 2M Karras",
                                              scheduler_config={"use_karras_sigmas": "yes"}),
         "scheduler_config.use_karras_sigmas"),
    # -- loras
    case("lora-sdxl-on-sd", with_(text2image(), loras=[{"name": "tiny-lora-sdxl"}]), "loras.0.name",
         says="stable-diffusion-xl"),
    case("lora-pickle-folder", with_(text2image(), loras=[{"name": PICKLE_LORA}]), "loras.0.name", says="pickle"),
    case("lora-pickle-weight-name", with_(text2image(), loras=[{"name": "tiny-lora-sd", "weight_name": "w.bin"}]),
         "loras.0.weight_name", says="safetensors"),
    case("lora-missing", with_(text2image(), loras=[{"name": "no-such-lora"}]), "loras.0.name"),
    case("lora-escape", with_(text2image(), loras=[{"name": "../tiny-lora-sd"}]), "loras.0.name",
         code="invalid_checkpoint"),
    case("lora-scale-too-big", with_(text2image(), loras=[{"name": "tiny-lora-sd", "scale": 5}]), "loras.0.scale"),
    case("lora-scale-nan", raw(with_(text2image(), loras=[{"name": "tiny-lora-sd", "scale": "@x"}]), x="NaN"),
         "loras.0.scale", statuses=(400, 422)),
    case("lora-scale-string", with_(text2image(), loras=[{"name": "tiny-lora-sd", "scale": "1"}]), "loras.0.scale"),
    case("lora-unknown-field", with_(text2image(), loras=[{"name": "tiny-lora-sd", "alpha": 1}]), "loras.0.alpha"),
    case("lora-too-many", with_(text2image(), loras=[{"name": "tiny-lora-sd", "scale": i / 10} for i in range(5)]),
         "loras"),
    case("lora-twice", with_(text2image(), loras=[{"name": "tiny-lora-sd"}, {"name": "tiny-lora-sd"}]),
         "loras.1.name"),
    case("lora-on-kandinsky", with_(text2image(), checkpoint="tiny-kandinsky22-decoder",
                                    loras=[{"name": "tiny-lora-sd"}]), "loras", says="stable-diffusion"),
    # -- checkpoints
    case("checkpoint-dotdot", on("../x"), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-absolute", on("/etc/passwd"), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-percent-escape", on("..%2f..%2fetc"), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-inner-dotdot", on("a/../../b"), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-backslash", on("..\\..\\windows"), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-home", on("~/models/tiny-sd"), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-nul", on("tiny-sd\x00"), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-dot", on("."), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-encoded-dots", on("%2e%2e/%2e%2e/etc"), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-double-encoded", on("%252e%252e%252fetc"), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-fullwidth-dots", on("\uff0e\uff0e/etc"), "checkpoint"),
    case("checkpoint-trailing-dotdot", on("tiny-sd/.."), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-dot-slash", on("./tiny-sd"), "checkpoint", code="invalid_checkpoint"),
    case("checkpoint-empty", on(""), "checkpoint"),
    case("checkpoint-symlink-out-of-root", on(SYMLINK_OUT), "checkpoint", code="invalid_checkpoint",
         says="outside"),
    case("checkpoint-unknown", on("no-such-checkpoint"), "checkpoint", code="checkpoint_not_found"),
    case("checkpoint-unsupported-pipeline", with_(image2image(), checkpoint=SHAPE), "checkpoint",
         code="unsupported_pipeline",
         says="AutoPipeline can't find a pipeline linked to ShapEImg2ImgPipeline"),
    case("revision-on-local-checkpoint", with_(text2image(), revision="main"), "revision"),
    # -- input images
    case("not-an-image", image2image(data_uri(b"hello world", "text/plain")), "inputs.image"),
    case("data-uri-not-base64", image2image("data:image/png,not-base64"), "inputs.image"),
    case("data-uri-bad-base64", image2image("data:image/png;base64,@@@@"), "inputs.image"),
    case("truncated-png", image2image(data_uri(TRUNCATED)), "inputs.image", says="not a readable image"),
    case("gif", image2image(data_uri(GIF, "image/gif")), "inputs.image", says="GIF"),
    case("decompression-bomb", image2image(data_uri(BOMB)), "inputs.image"),
    case("over-pixel-limit", image2image(data_uri(OVER_PIXELS)), "inputs.image", says="pixels"),
    case("mask-size-mismatch", inpainting(mask=data_uri(PNG_32)), "inputs.mask_image", says="same size"),
    case("bad-mask", inpainting(mask=data_uri(GIF, "image/gif")), "inputs.mask_image"),
    case("file-url", image2image("file:///etc/passwd"), "inputs.image"),
    case("metadata-url", image2image("http://169.254.169.254/latest/meta-data/"), "inputs.image"),
    case("http-inputs-off", image2image("https://example.com/cat.png"), "inputs.image", says="off"),
    case("ftp-url", image2image("ftp://example.com/cat.png"), "inputs.image"),
    case("s3-other-bucket", image2image(f"s3://another-bucket/{PREFIX}/x.png"), "inputs.image"),
    case("s3-outside-prefix", image2image(f"s3://{BUCKET}/secrets/x.png"), "inputs.image"),
    case("s3-dotdot", image2image(f"s3://{BUCKET}/{PREFIX}/../secrets/x.png"), "inputs.image"),
    case("s3-missing-key", image2image(f"s3://{BUCKET}/{PREFIX}/uploads/{uuid.uuid4().hex}.png"), "inputs.image",
         says="upload it first"),
]


# -- fixtures and checks ---------------------------------------------------------------------

@pytest.fixture
def odd_checkpoints(model_root: Path, tmp_path: Path) -> Iterator[None]:
    """A symlink out of the model root and a checkpoint AutoPipeline can't run, removed afterwards."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    link = model_root / SYMLINK_OUT
    link.symlink_to(outside, target_is_directory=True)
    shape = model_root / SHAPE
    shape.mkdir()
    (shape / "model_index.json").write_text(json.dumps({"_class_name": "ShapEImg2ImgPipeline"}))
    pickled = model_root / PICKLE_LORA
    pickled.mkdir()
    (pickled / "pytorch_lora_weights.bin").write_bytes(b"\x80\x04 a pickle")
    try:
        yield
    finally:
        link.unlink()
        shutil.rmtree(shape)
        shutil.rmtree(pickled)


def object_keys(storage: Storage) -> set[str]:
    pages = storage.client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def post(api: TestClient, body: Request | bytes | list[Any]) -> Response:
    if isinstance(body, bytes):
        return api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    return api.post("/v1/jobs", json=body)


def assert_refused(response: Response, field: str, statuses: tuple[int, ...] = (422,)) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, response.text[:500]
    assert response.status_code in statuses, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert {"code", "message", "field"} <= set(error), error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["field"] == field, error
    return error


# -- tests -----------------------------------------------------------------------------------

def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 35


@pytest.mark.parametrize("bad", CASES)
def test_bad_request_is_refused_and_changes_nothing(bad: Case, api: TestClient, settings: Settings,
                                                    storage: Storage, backlog: Callable[[], Backlog],
                                                    odd_checkpoints: None) -> None:
    assert (settings.s3_bucket, settings.s3_prefix) == (BUCKET, PREFIX)
    objects_before = object_keys(storage)

    error = assert_refused(post(api, bad.body), bad.field, bad.statuses)

    if bad.code:
        assert error["code"] == bad.code
    if bad.says:
        assert bad.says in error["message"]
    assert backlog() == Backlog(queued=0, records=0)
    assert object_keys(storage) == objects_before


def test_same_request_with_a_good_input_is_accepted(api: TestClient, backlog: Callable[[], Backlog]) -> None:
    """The table's requests fail for the reason named, not because the base request is bad."""
    good = (text2image(), image2image(), inpainting(), controlled("tiny-controlnet-sd"),
            with_(text2image(guidance_rescale=0.5), enable_pag=False), image2image(num_inference_steps=5, strength=0.2),
            with_(text2image(), scheduler="DPM++ 2M Karras", scheduler_config={"timestep_spacing": "trailing"}),
            with_(text2image(), loras=[{"name": "tiny-lora-sd", "scale": 0.8}, {"name": "tiny-lora-sd-b"}]))
    for body in good:
        assert api.post("/v1/jobs", json=body).status_code == 202, body
    assert backlog() == Backlog(queued=len(good), records=len(good))


@pytest.fixture
def small_api(make_api: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    return make_api(dataclasses.replace(settings, max_body_bytes=1024))


def test_body_over_max_body_bytes_is_413(small_api: TestClient, backlog: Callable[[], Backlog]) -> None:
    body = text2image(prompt="x" * 2000)

    error = assert_refused(small_api.post("/v1/jobs", json=body), "body", (413,))

    assert error["code"] == "body_too_large"
    assert "1024" in error["message"]
    assert backlog() == Backlog(queued=0, records=0)


def test_chunked_body_over_max_body_bytes_is_413(small_api: TestClient, backlog: Callable[[], Backlog]) -> None:
    """No content-length to check up front: the limit applies while the body is read."""
    text = json.dumps(text2image(prompt="x" * 4000)).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(text), 500):
            yield text[i:i + 500]

    response = small_api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})

    assert "content-length" not in response.request.headers
    error = assert_refused(response, "body", (413,))
    assert error["code"] == "body_too_large"
    assert backlog() == Backlog(queued=0, records=0)


def test_body_under_max_body_bytes_is_accepted(small_api: TestClient, backlog: Callable[[], Backlog]) -> None:
    def chunks() -> Iterator[bytes]:
        yield json.dumps(text2image()).encode()

    assert small_api.post("/v1/jobs", json=text2image()).status_code == 202
    assert small_api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"}).status_code \
        == 202
    assert backlog() == Backlog(queued=2, records=2)


# -- http(s) inputs when the operator turned them on: never inward ----------------------------

INTERNAL_URLS = {
    "loopback": "http://127.0.0.1:6379/x.png",
    "localhost-name": "http://localhost/x.png",
    "loopback-short": "http://127.1/x.png",
    "loopback-decimal": "http://2130706433/x.png",
    "loopback-ipv6": "http://[::1]/x.png",
    "ipv4-mapped-ipv6": "http://[::ffff:127.0.0.1]/x.png",
    "metadata": "http://169.254.169.254/latest/meta-data/iam/",
    "private-10": "https://10.0.0.8/x.png",
    "private-192": "http://192.168.1.1/x.png",
    "private-172": "http://172.16.5.4/x.png",
    "shared-cgnat": "http://100.64.0.1/x.png",
    "unspecified": "http://0.0.0.0/x.png",
    "link-local-ipv6": "http://[fe80::1]/x.png",
    "unique-local-ipv6": "http://[fd00::1]/x.png",
    "credentials": "http://user:pw@example.com/x.png",
}


@pytest.fixture
def http_api(make_api: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    return make_api(dataclasses.replace(settings, allow_http_inputs=True))


@pytest.mark.parametrize("url", list(INTERNAL_URLS.values()), ids=list(INTERNAL_URLS))
def test_http_inputs_never_reach_internal_addresses(url: str, http_api: TestClient,
                                                    backlog: Callable[[], Backlog]) -> None:
    assert_refused(post(http_api, image2image(url)), "inputs.image")
    assert backlog() == Backlog(queued=0, records=0)


# -- the checkpoint allowlist ------------------------------------------------------------------

def test_checkpoint_off_the_allowlist_is_403_and_changes_nothing(
        make_api: Callable[[Settings], TestClient], settings: Settings, backlog: Callable[[], Backlog]) -> None:
    api = make_api(dataclasses.replace(settings, checkpoint_allowlist="stabilityai/*, runwayml/*"))

    error = assert_refused(post(api, text2image()), "checkpoint", (403,))

    assert error["code"] == "checkpoint_not_allowed" and "tiny-sd" in error["message"]
    assert backlog() == Backlog(queued=0, records=0)
    allowed = make_api(dataclasses.replace(settings, checkpoint_allowlist="tiny-*"))
    assert post(allowed, text2image()).status_code == 202
