"""End to end over HTTP for more families: every task each family has, on one worker consuming their queues.

Tiny checkpoints built offline by ``hotpipe dev make-checkpoints`` (the session's
``model_root``): SD with its ControlNet, SDXL base with its ControlNet, an SDXL refiner
(saved as StableDiffusionXLImg2ImgPipeline), SD3 and Flux (CLIP + T5, flow matching),
PixArt-Σ (T5) and Chroma, whose image2image and inpainting AutoPipeline can't reach
(hotpipe's own table), DeepFloyd IF (pixel space, T5); ControlNet and PAG variants run on
their base family's queue.  A task the checkpoint lacks is refused at submit with a 422
and leaves no record and no message behind.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image, ImageDraw

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import APIError, Client
from hotpipe.shared import keys
from hotpipe.shared.job import JobRecord
from hotpipe.shared.status import Status
from tests.producer.conftest import queue_lists

pytestmark = pytest.mark.e2e
FAMILIES = ["stable-diffusion", "stable-diffusion-xl", "stable-diffusion-3", "flux", "pixart-sigma", "chroma", "if",
            "kandinsky22"]
WIDTH, HEIGHT = 64, 48  # not square: a swapped width and height shows


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Iterator[LocalStack]:
    """Redis, S3, the API and one Celery worker consuming the queues of ``FAMILIES``."""
    with LocalStack(tmp_path_factory.mktemp("families"), model_root, redis_binary=find_redis_server("system"),
                    families=FAMILIES, extra_env={"HOTPIPE_PROGRESS_INTERVAL_S": "0"}) as s:
        yield s


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[Client]:
    with Client(stack.api_url) as c:
        yield c


def png_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def source_image() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (40, 90, 200))
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), fill=(230, 200, 30))
    return image


def mask_image() -> Image.Image:
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    ImageDraw.Draw(mask).rectangle((16, 8, 48, 40), fill=255)
    return mask


def control_image() -> Image.Image:
    """An edge map, the kind of image a ControlNet conditions on."""
    image = Image.new("RGB", (WIDTH, HEIGHT), 0)
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), outline=(255, 255, 255), width=2)
    return image


def body(checkpoint: str, task: str, controlnet: str | None = None, **options: Any) -> dict[str, Any]:
    """A request for ``task``; image tasks take the input's size, a ControlNet text2image takes the control
    image's, a plain text2image is told it."""
    params: dict[str, Any] = {"prompt": "a lighthouse at dusk", "num_inference_steps": 4, "seed": 7}
    inputs: dict[str, str] = {}
    if controlnet is not None:
        inputs["control_image"] = png_uri(control_image())
    if task == "text2image" and controlnet is None:
        params.update(height=HEIGHT, width=WIDTH)
    elif task != "text2image":
        inputs["image"] = png_uri(source_image())
    if task == "image2image":
        params["strength"] = 0.6  # SDXL's default 0.3 would leave 4 * 0.3 < 2 steps
    if task == "inpainting":
        inputs["mask_image"] = png_uri(mask_image())
    params.update(options.pop("params", {}))
    request = {"checkpoint": checkpoint, "task": task, "params": params, "inputs": inputs, **options}
    return request if controlnet is None else {**request, "controlnet": controlnet}


@pytest.mark.parametrize(("checkpoint", "task", "family", "pipeline"), [
    ("tiny-sdxl", "text2image", "stable-diffusion-xl", "StableDiffusionXLPipeline"),
    ("tiny-sdxl", "image2image", "stable-diffusion-xl", "StableDiffusionXLImg2ImgPipeline"),
    ("tiny-sdxl", "inpainting", "stable-diffusion-xl", "StableDiffusionXLInpaintPipeline"),
    ("tiny-sdxl-refiner", "image2image", "stable-diffusion-xl", "StableDiffusionXLImg2ImgPipeline"),
    ("tiny-sdxl-refiner", "inpainting", "stable-diffusion-xl", "StableDiffusionXLInpaintPipeline"),
    ("tiny-sd3", "text2image", "stable-diffusion-3", "StableDiffusion3Pipeline"),
    ("tiny-sd3", "image2image", "stable-diffusion-3", "StableDiffusion3Img2ImgPipeline"),
    ("tiny-sd3", "inpainting", "stable-diffusion-3", "StableDiffusion3InpaintPipeline"),
    ("tiny-flux", "text2image", "flux", "FluxPipeline"),
    ("tiny-flux", "image2image", "flux", "FluxImg2ImgPipeline"),
    ("tiny-flux", "inpainting", "flux", "FluxInpaintPipeline"),
    ("tiny-pixart-sigma", "text2image", "pixart-sigma", "PixArtSigmaPipeline"),
    ("tiny-chroma", "text2image", "chroma", "ChromaPipeline"),
    ("tiny-chroma", "image2image", "chroma", "ChromaImg2ImgPipeline"),  # beyond AutoPipeline
    ("tiny-chroma", "inpainting", "chroma", "ChromaInpaintPipeline"),  # beyond AutoPipeline
])
def test_every_task_the_family_has_runs(client: Client, stack: LocalStack, checkpoint: str, task: str,
                                        family: str, pipeline: str) -> None:
    check_runs(client, stack, body(checkpoint, task), family, pipeline)


def check_runs(client: Client, stack: LocalStack, request: dict[str, Any], family: str, pipeline: str,
               size: tuple[int, int] = (WIDTH, HEIGHT)) -> JobRecord:
    """Submitted, recorded under ``family`` naming ``pipeline``, run to one image of ``size``."""
    submitted = client.submit(request)
    assert (submitted.status, submitted.family, submitted.pipeline) == (Status.QUEUED, family, pipeline)

    record = client.wait(submitted.id, timeout_s=180)
    assert record.status is Status.SUCCEEDED, record.error
    assert (record.family, record.pipeline, record.attempts) == (family, pipeline, 1)
    assert record.progress is not None and 0 < record.progress.step == record.progress.total
    assert record.result is not None and len(record.result.images) == 1
    image = record.result.images[0]
    stored = Image.open(io.BytesIO(stack.storage().get(image.key)))
    assert (stored.size, image.width, image.height) == (size, *size)
    return record


@pytest.mark.parametrize(("checkpoint", "controlnet", "task", "family", "pipeline"), [
    ("tiny-sd", "tiny-controlnet-sd", "text2image", "stable-diffusion", "StableDiffusionControlNetPipeline"),
    ("tiny-sd", "tiny-controlnet-sd", "image2image", "stable-diffusion", "StableDiffusionControlNetImg2ImgPipeline"),
    ("tiny-sd", "tiny-controlnet-sd", "inpainting", "stable-diffusion", "StableDiffusionControlNetInpaintPipeline"),
    ("tiny-sdxl", "tiny-controlnet-sdxl", "text2image", "stable-diffusion-xl", "StableDiffusionXLControlNetPipeline"),
    ("tiny-sdxl", "tiny-controlnet-sdxl", "image2image", "stable-diffusion-xl",
     "StableDiffusionXLControlNetImg2ImgPipeline"),
    ("tiny-sdxl", "tiny-controlnet-sdxl", "inpainting", "stable-diffusion-xl",
     "StableDiffusionXLControlNetInpaintPipeline"),
])
def test_controlnet_runs_every_task_on_its_base_familys_workers(client: Client, stack: LocalStack, checkpoint: str,
                                                                controlnet: str, task: str, family: str,
                                                                pipeline: str) -> None:
    """``controlnet`` names a ControlNet checkpoint; the job runs on the base family's queue with the ControlNet
    class, conditioned on ``inputs.control_image`` (a pass-through ``controlnet_conditioning_scale`` too)."""
    request = body(checkpoint, task, controlnet, params={"controlnet_conditioning_scale": 0.7})
    record = check_runs(client, stack, request, family, pipeline)
    assert record.result is not None and record.result.sidecar_key is not None
    provenance = json.loads(stack.storage().get(record.result.sidecar_key))["provenance"]
    assert (provenance["pipeline"], provenance["controlnet"]["checkpoint"]) == (pipeline, controlnet)
    assert provenance["controlnet"]["class_name"] == "ControlNetModel"


@pytest.mark.parametrize(("checkpoint", "task", "family", "pipeline"), [
    ("tiny-sd", "text2image", "stable-diffusion", "StableDiffusionPAGPipeline"),
    ("tiny-sd", "inpainting", "stable-diffusion", "StableDiffusionPAGInpaintPipeline"),
    ("tiny-sdxl", "image2image", "stable-diffusion-xl", "StableDiffusionXLPAGImg2ImgPipeline"),
    ("tiny-pixart-sigma", "text2image", "pixart-sigma", "PixArtSigmaPAGPipeline"),
    ("tiny-sd3", "image2image", "stable-diffusion-3", "StableDiffusion3PAGImg2ImgPipeline"),
])
def test_enable_pag_runs_the_familys_pag_pipeline(client: Client, stack: LocalStack, checkpoint: str, task: str,
                                                  family: str, pipeline: str) -> None:
    request = body(checkpoint, task, enable_pag=True, params={"pag_scale": 2.0})
    check_runs(client, stack, request, family, pipeline)


def test_controlnet_with_pag(client: Client, stack: LocalStack) -> None:
    request = body("tiny-sd", "text2image", "tiny-controlnet-sd", enable_pag=True)
    check_runs(client, stack, request, "stable-diffusion", "StableDiffusionControlNetPAGPipeline")


@pytest.mark.parametrize(("task", "pipeline", "size"), [
    ("text2image", "IFPipeline", (WIDTH, HEIGHT)),
    # IF's image pipelines resize the input to the UNet's sample size (32) on its short side, in multiples of 8
    ("image2image", "IFImg2ImgPipeline", (40, 32)),
    ("inpainting", "IFInpaintingPipeline", (40, 32)),
])
def test_deepfloyd_if_runs_every_task(client: Client, stack: LocalStack, task: str, pipeline: str,
                                      size: tuple[int, int]) -> None:
    """IF (pixel space, T5 built offline, only the legacy ``callback``): progress still reaches the last step."""
    check_runs(client, stack, body("tiny-if", task), "if", pipeline, size)


@pytest.mark.parametrize(("checkpoint", "task", "pipeline", "size"), [
    ("tiny-kandinsky22-decoder", "text2image", "KandinskyV22CombinedPipeline", (WIDTH, HEIGHT)),
    # Diffusers 0.42's KandinskyV22Img2ImgPipeline calls image_processor.preprocess(image, width, height)
    # against its (image, height, width) signature, so a non-square image2image comes back transposed
    ("tiny-kandinsky22-decoder", "image2image", "KandinskyV22Img2ImgCombinedPipeline", (HEIGHT, WIDTH)),
    ("tiny-kandinsky22-decoder-inpaint", "inpainting", "KandinskyV22InpaintCombinedPipeline", (WIDTH, HEIGHT)),
])
def test_kandinsky22_decoder_runs_with_the_prior_its_model_card_names(client: Client, stack: LocalStack,
                                                                     checkpoint: str, task: str, pipeline: str,
                                                                     size: tuple[int, int]) -> None:
    """The checkpoint is a decoder; its README names the prior (AutoPipeline's connected pipeline); the
    job runs the combined pipeline, built from both, on the kandinsky22 queue."""
    check_runs(client, stack, body(checkpoint, task), "kandinsky22", pipeline, size)


def backlog(stack: LocalStack) -> tuple[int, int]:
    """(messages waiting on any of the stack's queues, job records)."""
    client = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
    try:
        queued = sum(int(client.llen(name)) for family in FAMILIES for name in queue_lists(family))
        records = sum(1 for _ in client.scan_iter(match=keys.job("*"), count=1000))
        return queued, records
    finally:
        client.close()


@pytest.mark.parametrize(("checkpoint", "task", "message"), [
    ("tiny-pixart-sigma", "inpainting",
     "AutoPipeline can't find a pipeline linked to PixArtSigmaPipeline for pixart-sigma (task inpainting is not "
     "available for family pixart-sigma; it has: text2image)"),
    ("tiny-pixart-sigma", "image2image", "task image2image is not available for family pixart-sigma"),
    ("tiny-sdxl-refiner", "text2image",
     "checkpoint 'tiny-sdxl-refiner' sets requires_aesthetics_score in model_index.json (an SDXL refiner): "
     "it runs image2image and inpainting only, not text2image"),
])
def test_a_task_the_checkpoint_lacks_is_refused_and_nothing_is_enqueued(client: Client, stack: LocalStack,
                                                                       checkpoint: str, task: str,
                                                                       message: str) -> None:
    before = backlog(stack)
    with pytest.raises(APIError) as exc:
        client.submit(body(checkpoint, task))
    assert (exc.value.status, exc.value.code, exc.value.field) == (422, "unsupported_pipeline", "checkpoint")
    assert message in exc.value.message
    assert backlog(stack) == before
