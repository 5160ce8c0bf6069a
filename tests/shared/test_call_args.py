"""Call arguments checked against the generated table before enqueue (API-level cases: tests/producer)."""

from __future__ import annotations

from typing import Any

import pytest

from hotpipe.shared import call_args, family_table
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.job import Params, Task


def params(**extra: Any) -> Params:
    return Params.model_validate({"prompt": "a fox", **extra})


@pytest.mark.parametrize(("pipeline", "extra"), [
    ("StableDiffusionPAGPipeline", {"pag_scale": 3.0, "pag_adaptive_scale": 0.1}),
    ("StableDiffusionControlNetPipeline", {"controlnet_conditioning_scale": 0.5, "guess_mode": True,
                                           "control_guidance_start": [0.0], "control_guidance_end": [0.8]}),
    ("StableDiffusionXLPipeline", {"guidance_rescale": 0.7, "clip_skip": 1}),
])
def test_arguments_the_pipeline_takes_pass_through(pipeline: str, extra: dict[str, Any]) -> None:
    call_args.check_params(params(**extra), pipeline)


@pytest.mark.parametrize("pipeline", sorted(family_table.CALL_ARGS))
def test_nothing_reserved_or_tensor_valued_is_settable(pipeline: str) -> None:
    settable = call_args.settable(family_table.CALL_ARGS[pipeline])
    assert not {"generator", "output_type", "latents", "return_dict", "callback_on_step_end"} & set(settable)
    assert not [a for a in settable if a.endswith(("_embeds", "_latents", "_kwargs"))]


@pytest.mark.parametrize(("pipeline", "steps", "strength", "refused"), [
    ("StableDiffusionImg2ImgPipeline", 4, 0.2, True),   # int(0.8) = 0 steps
    ("StableDiffusionImg2ImgPipeline", 5, 0.2, False),  # int(1.0) = 1 step
    ("StableDiffusionXLImg2ImgPipeline", 3, None, True),  # default strength 0.3
    ("StableDiffusionXLImg2ImgPipeline", None, None, False),  # 50 x 0.3
    ("StableDiffusion3Img2ImgPipeline", 1, 0.1, False),  # keeps steps - int(steps - steps*strength) >= 1
    ("StableDiffusionPipeline", 1, None, False),
])
def test_steps_times_strength(pipeline: str, steps: int | None, strength: float | None, refused: bool) -> None:
    p = Params.model_validate({"prompt": "x", "num_inference_steps": steps, "strength": strength})
    if refused:
        with pytest.raises(InvalidRequest) as exc:
            call_args.check_denoising_steps(p, pipeline)
        assert exc.value.field == "params.strength"
        assert "num_inference_steps" in exc.value.message and "strength" in exc.value.message
    else:
        call_args.check_denoising_steps(p, pipeline)


def test_the_suggested_fix_is_enough() -> None:
    """Both remedies the message names do leave a step."""
    with pytest.raises(InvalidRequest) as exc:
        call_args.check_denoising_steps(params(num_inference_steps=3, strength=0.3), "StableDiffusionImg2ImgPipeline")
    assert "at least 4" in exc.value.message and "at least 0.333333" in exc.value.message
    call_args.check_denoising_steps(params(num_inference_steps=4, strength=0.3), "StableDiffusionImg2ImgPipeline")
    call_args.check_denoising_steps(params(num_inference_steps=3, strength=0.34), "StableDiffusionImg2ImgPipeline")


@pytest.mark.parametrize(("pipeline", "task", "arg"), [
    ("StableDiffusionControlNetPipeline", Task.TEXT2IMAGE, "image"),
    ("StableDiffusionXLControlNetPipeline", Task.TEXT2IMAGE, "image"),
    ("StableDiffusionControlNetImg2ImgPipeline", Task.IMAGE2IMAGE, "control_image"),
    ("FluxControlNetPipeline", Task.TEXT2IMAGE, "control_image"),
    ("StableDiffusionPipeline", Task.TEXT2IMAGE, None),
])
def test_control_image_goes_to_the_right_argument(pipeline: str, task: Task, arg: str | None) -> None:
    assert call_args.control_image_arg(pipeline, task) == arg
