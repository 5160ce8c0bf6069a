"""What a caller may pass to the resolved pipeline's ``__call__``, checked before anything is enqueued.

The arguments each class accepts come from the generated table (``family_table.CALL_ARGS``).
Beyond the named ``Params`` fields, any accepted argument passes through as a JSON scalar or
a short list of scalars — except the ones only hotpipe sets (``generator`` from ``seed``,
``output_type``, callbacks) and tensors, which a JSON request can't carry anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hotpipe.shared import family_table
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.job import Params, Task

#: request parameter -> the pipeline ``__call__`` argument it becomes
CALL_ARG_OF: dict[str, str] = {"num_images": "num_images_per_prompt", "seed": "generator"}

#: arguments hotpipe sets itself, and what the caller uses instead
RESERVED: dict[str, str] = {
    "generator": "use params.seed",
    "output_type": "images are always decoded; choose output_format",
    "return_dict": "hotpipe reads the pipeline's output itself",
    "num_images_per_prompt": "use params.num_images",
    "callback": "progress comes from the job's events",
    "callback_steps": "progress comes from the job's events",
    "callback_on_step_end": "progress comes from the job's events",
    "callback_on_step_end_tensor_inputs": "progress comes from the job's events",
    "image": "send it in inputs.image",
    "mask_image": "send it in inputs.mask_image",
    "control_image": "send it in inputs.control_image",
}
#: argument names that carry tensors, images or dicts: never caller-settable
TENSOR_SUFFIXES = ("latents", "_embeds", "_embeddings", "_kwargs", "_attention_mask", "_image", "_mask")
MAX_LIST = 16
#: steps and strength a pipeline uses when the request leaves them out and the table has no default
DEFAULT_STEPS = 50


def check_params(params: Params, pipeline: str) -> None:
    """Refuse parameters the resolved pipeline's ``__call__`` does not take (or that only hotpipe sets)."""
    accepted = family_table.CALL_ARGS.get(pipeline)
    if accepted is None:
        return
    extra = params.model_extra or {}
    for name, value in params.model_dump(exclude_none=True).items():
        field = f"params.{name}"
        if name in extra:
            check_passthrough(name, value, pipeline, accepted)
        elif name == "num_images" and value == 1:
            continue
        elif CALL_ARG_OF.get(name, name) not in accepted:
            raise InvalidRequest(f"{field} is not accepted by {pipeline}; remove it", field=field)


def check_passthrough(name: str, value: Any, pipeline: str, accepted: frozenset[str]) -> None:
    """One extra parameter: an accepted, caller-settable argument with a JSON scalar (or list) value."""
    field = f"params.{name}"
    if name in RESERVED:
        raise InvalidRequest(f"{field} can't be set: {RESERVED[name]}", field=field)
    if name.endswith(TENSOR_SUFFIXES):
        raise InvalidRequest(f"{field} takes tensors, images or objects in {pipeline}; hotpipe passes only "
                             "numbers, text and booleans (images go in inputs)", field=field)
    if name not in accepted:
        raise InvalidRequest(f"{field} is not accepted by {pipeline}; remove it (it takes: "
                             f"{', '.join(sorted(settable(accepted)))})", field=field)
    scalars = value if isinstance(value, list) else [value]
    if not (len(scalars) <= MAX_LIST and all(isinstance(v, str | int | float | bool) for v in scalars)):
        raise InvalidRequest(f"{field} must be a number, a string, a boolean or a list of at most {MAX_LIST} "
                             "of them", field=field)


def settable(accepted: Iterable[str]) -> list[str]:
    """The arguments of a pipeline a caller may set (as ``params``)."""
    named = set(Params.model_fields) - {"num_images", "seed"}
    return [a for a in accepted if a in named or (a not in RESERVED and not a.endswith(TENSOR_SUFFIXES))]


def check_inputs(inputs: Iterable[str], pipeline: str, task: Task, has_controlnet: bool) -> None:
    """Inputs the pipeline takes; a ControlNet pipeline needs ``control_image``, others can't use it."""
    given = set(inputs)
    if has_controlnet and "control_image" not in given:
        raise InvalidRequest(f"inputs.control_image is required: {pipeline} is a ControlNet pipeline and "
                             "conditions on it", field="inputs.control_image")
    if "control_image" in given and not has_controlnet:
        raise InvalidRequest(f"inputs.control_image needs a ControlNet: set controlnet to a ControlNet checkpoint "
                             f"(this job runs {pipeline})", field="inputs.control_image")
    accepted = family_table.CALL_ARGS.get(pipeline, frozenset())
    for name in sorted(given):
        takes = control_image_arg(pipeline, task) is not None if name == "control_image" else name in accepted
        if accepted and not takes:
            raise InvalidRequest(f"inputs.{name} is not accepted by {pipeline}; remove it", field=f"inputs.{name}")


def control_image_arg(pipeline: str, task: Task) -> str | None:
    """The ``__call__`` argument the control image goes to: ``control_image``, or ``image`` for text2image
    ControlNet pipelines (``StableDiffusionControlNetPipeline(image=...)`` is the control image)."""
    accepted = family_table.CALL_ARGS.get(pipeline, frozenset())
    if "control_image" in accepted:
        return "control_image"
    if task is Task.TEXT2IMAGE and {"image", "controlnet_conditioning_scale"} <= accepted:
        return "image"
    return None


def denoising_steps(pipeline: str, num_inference_steps: int | None, strength: float | None) -> int:
    """How many denoising steps ``pipeline`` runs for these parameters (``int(steps * strength)`` where
    the class cuts its schedule that way; the step count otherwise)."""
    defaults = family_table.TRUNCATING_STRENGTH.get(pipeline)
    if defaults is None:
        return num_inference_steps or DEFAULT_STEPS
    steps = num_inference_steps or defaults[0]
    return min(int(steps * (defaults[1] if strength is None else strength)), steps)


def check_denoising_steps(params: Params, pipeline: str) -> None:
    """A pipeline that keeps ``int(steps * strength)`` steps does nothing when that is 0: refuse it."""
    defaults = family_table.TRUNCATING_STRENGTH.get(pipeline)
    if defaults is None:
        return
    if denoising_steps(pipeline, params.num_inference_steps, params.strength) >= 1:
        return
    steps = params.num_inference_steps or defaults[0]
    strength = params.strength if params.strength is not None else defaults[1]
    least_steps = int(1 / strength) + (0 if (1 / strength).is_integer() else 1)
    raise InvalidRequest(
        f"params.num_inference_steps x params.strength = {steps} x {strength:g} = {steps * strength:g}: {pipeline} "
        f"runs int() of that many denoising steps, so none; raise num_inference_steps to at least {least_steps} "
        f"or strength to at least {1 / steps:g}", field="params.strength")
