"""The OpenAI <-> hotpipe translation on its own: sizes, form fields, parameter names, masks."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from hotpipe.producer.openai_compat import (
    ImageRequest,
    diffusers_mask,
    edit_inputs,
    form_fields,
    job_request,
    param_for,
    parse_size,
)
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.job import Task
from hotpipe.shared.settings import Settings


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("size", "expected"), [("512x768", (512, 768)), ("auto", None), (None, None),
                                                ("8x2048", (8, 2048))])
def test_sizes_that_parse(size: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_size(size, 2048) == expected


@pytest.mark.parametrize("size", ["512", "512x", "x512", "513x512", "0x0", "4096x512", "512X512", " 512x512",
                                  "1e3x8"])
def test_sizes_that_are_refused_name_size(size: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_size(size, 2048)
    assert refused.value.field == "size" and "multiples of 8" in refused.value.message


def test_hotpipe_fields_split_into_job_params_and_inputs() -> None:
    req = ImageRequest.model_validate({"model": "tiny-sd", "prompt": "p", "n": 2, "size": "64x32", "seed": 3,
                                       "steps": 5, "priority": 8, "user": "u-1", "pag_scale": 2.0,
                                       "control_image": "data:image/png;base64,AAAA", "controlnet": "cn",
                                       "webhook_url": "https://example.com/hook", "timeout_s": 9})
    job = job_request(req, Task.TEXT2IMAGE, Settings())
    params = job.params.model_dump(exclude_none=True)
    assert (job.checkpoint, job.priority, job.controlnet) == ("tiny-sd", 8, "cn")
    assert (job.webhook_url, job.timeout_s) == ("https://example.com/hook", 9)
    assert {k: params[k] for k in ("num_images", "width", "height", "seed", "num_inference_steps",
                                   "pag_scale")} == {"num_images": 2, "width": 64, "height": 32, "seed": 3,
                                                     "num_inference_steps": 5, "pag_scale": 2.0}
    assert "user" not in params and job.inputs.control_image == "data:image/png;base64,AAAA"


def test_a_wrong_type_names_the_openai_parameter() -> None:
    req = ImageRequest.model_validate({"model": "m", "prompt": "p", "seed": "seven"})
    with pytest.raises(InvalidRequest) as refused:
        job_request(req, Task.TEXT2IMAGE, Settings())
    assert refused.value.field == "seed"


def test_form_fields_read_extras_as_json_scalars_and_keep_text_as_text() -> None:
    fields = form_fields({"model": "m", "n": "2", "prompt": "7", "seed": "7", "strength": "0.5",
                          "enable_pag": "true", "negative_prompt": "123", "scheduler": "euler", "bad": "{}"})
    assert fields == {"model": "m", "n": "2", "prompt": "7", "seed": 7, "strength": 0.5, "enable_pag": True,
                      "negative_prompt": "123", "scheduler": "euler", "bad": "{}"}


@pytest.mark.parametrize(("field", "param"), [("checkpoint", "model"), ("params.num_images", "n"),
                                              ("params.height", "size"), ("inputs.mask_image", "mask"),
                                              ("params.guidance_scale", "guidance_scale"), ("priority", "priority"),
                                              (None, None)])
def test_param_names(field: str | None, param: str | None) -> None:
    assert param_for(field) == param


def test_a_palette_mask_with_a_transparent_index_works_like_an_alpha_channel() -> None:
    mask = Image.new("P", (8, 8), 1)
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.paste(0, (0, 0, 4, 8))
    mask.info["transparency"] = 0
    white = diffusers_mask(png(mask), (8, 8), (16, 16))
    assert white.size == (16, 16) and white.getpixel((2, 5)) == 255 and white.getpixel((12, 5)) == 0


def test_an_rgba_image_is_sent_as_rgb_without_its_alpha() -> None:
    inputs = edit_inputs(png(Image.new("RGBA", (8, 8), (10, 20, 30, 0))), None, None)
    image = Image.open(io.BytesIO(base64.b64decode(inputs["image"].split(",", 1)[1])))
    assert (image.mode, image.getpixel((0, 0))) == ("RGB", (10, 20, 30)) and "mask_image" not in inputs
