"""One pipeline call: arguments from the job spec, a seeded generator, a step callback.

The step callback reports progress and can stop the run: when the job was canceled or
this attempt no longer owns it, the callback raises, so nothing half-denoised is ever
decoded, let alone uploaded.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import diffusers
import torch
from PIL import Image

from hotpipe.shared import call_args, family_table, scheduler_table
from hotpipe.shared.job import SchedulerChoice

#: request parameter -> pipeline argument, where the names differ
ARG_NAMES = {"num_images": "num_images_per_prompt"}
MASK_INPUTS = frozenset({"mask_image"})



class Verdict(IntEnum):
    """The step callback's answer: go on, or stop the run and why.  ``GO_ON``, ``CANCELED`` and
    ``LOST`` are the values ``JobStore.progress`` returns (its Lua script's reply)."""

    GO_ON = 0
    CANCELED = 1  # the caller canceled the job
    LOST = -1  # a newer attempt owns the job: stand down, write nothing
    RELEASE = 2  # the worker is shutting down past its grace period: give the job back
    TIMED_OUT = 3  # past the job's own ``timeout_s``


#: on_step(step, total) -> GO_ON, or the verdict that stops the run
StepHook = Callable[[int, int], Verdict]


class Stopped(Exception):
    """The run was stopped from the step callback (canceled, or the attempt lost the job)."""

    def __init__(self, verdict: Verdict):
        super().__init__(f"stopped with verdict {verdict}")
        self.verdict = Verdict(verdict)


#: what a pipeline raises when the arguments it was given don't work together (a schedule left with no
#: step reshapes a tensor of 0 elements: a RuntimeError); the producer checked every argument it could
CALLER_CAUSED: tuple[type[Exception], ...] = (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError,
                                               RuntimeError)
#: RuntimeErrors that are the worker's, never the caller's
NOT_THE_CALLERS: tuple[type[BaseException], ...] = (
    torch.OutOfMemoryError, *((torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ()))


class PipelineRefused(Exception):
    """The pipeline call failed on the job's own arguments: the job fails ``pipeline_error`` (the caller's to
    fix), never ``internal_error``."""

    def __init__(self, pipeline: str, cause: BaseException):
        super().__init__(f"{pipeline} failed with this job's parameters ({type(cause).__name__}: {cause}); "
                         "change the parameters (num_inference_steps, strength, size, scheduler) and resubmit")


def decode_input(name: str, data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    return image.convert("L" if name in MASK_INPUTS else "RGB")


def call_kwargs(pipe: Any, params: dict[str, Any], inputs: dict[str, Image.Image]) -> dict[str, Any]:
    """The keyword arguments of the pipeline call for these request parameters and inputs."""
    kwargs: dict[str, Any] = {ARG_NAMES.get(k, k): v for k, v in params.items() if k != "seed"}
    accepted = family_table.CALL_ARGS.get(type(pipe).__name__, frozenset())
    inputs = dict(inputs)
    if "control_image" in inputs and "control_image" not in accepted:
        # text2image ControlNet pipelines take the control image as ``image`` (the producer checked it)
        inputs["image"] = inputs.pop("control_image")
    kwargs.update(inputs)
    if "image" in inputs and {"height", "width"} <= accepted:
        # Diffusers would fall back to the model's default size; callers expect the input's.
        kwargs.setdefault("height", inputs["image"].height // 8 * 8)
        kwargs.setdefault("width", inputs["image"].width // 8 * 8)
    kwargs["generator"] = torch.Generator(device="cpu").manual_seed(int(params["seed"]))
    kwargs["output_type"] = "pil"
    return kwargs


def fresh_scheduler(default: Any, choice: SchedulerChoice | None) -> Any:
    """A new scheduler for one run: the checkpoint's own class, or the job's choice, from the checkpoint's
    scheduler config plus the job's overrides.  Only classes in the generated table are ever built."""
    if choice is None:
        return default.from_config(default.config)
    if choice.name not in scheduler_table.OPTIONS:
        raise ValueError(f"scheduler {choice.name!r} is not one hotpipe builds")
    cls = getattr(diffusers, choice.name)
    try:
        return cls.from_config(default.config, **choice.config)
    except (ValueError, NotImplementedError, TypeError) as exc:
        raise PipelineRefused(choice.name, exc) from exc


def run(pipe: Any, params: dict[str, Any], inputs: dict[str, Image.Image], on_step: StepHook,
        scheduler: SchedulerChoice | None = None, per_image: dict[str, Any] | None = None) -> list[Image.Image]:
    """Run ``pipe`` once with its own fresh scheduler (the job's choice, if any); returns the PIL images.
    A chosen scheduler is only lent: the hot pipeline gets its own class back, whatever happens.
    ``per_image`` replaces call arguments with one entry per image (a batch's prompts, generators)."""
    default = pipe.scheduler
    pipe.scheduler = fresh_scheduler(default, scheduler)
    try:
        return _call(pipe, params, inputs, on_step, per_image or {})
    finally:
        if scheduler is not None:
            pipe.scheduler = default


def _call(pipe: Any, params: dict[str, Any], inputs: dict[str, Image.Image], on_step: StepHook,
          per_image: dict[str, Any]) -> list[Image.Image]:
    kwargs = {**call_kwargs(pipe, params, inputs), **per_image}
    steps = int(params.get("num_inference_steps") or 50)
    accepted = family_table.CALL_ARGS.get(type(pipe).__name__, frozenset())

    if "callback_on_step_end" in accepted:
        def on_step_end(p: Any, step: int, timestep: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
            verdict = on_step(step + 1, int(getattr(p, "_num_timesteps", None) or steps))
            if verdict != Verdict.GO_ON:
                raise Stopped(verdict)
            return cb_kwargs
        kwargs["callback_on_step_end"] = on_step_end
    elif "callback" in accepted:  # older pipelines (DeepFloyd IF) only have the legacy hook
        total = call_args.denoising_steps(type(pipe).__name__, params.get("num_inference_steps"),
                                          params.get("strength"))

        def legacy(step: int, timestep: Any, latents: Any) -> None:
            verdict = on_step(step + 1, total)
            if verdict != Verdict.GO_ON:
                raise Stopped(verdict)
        kwargs["callback"], kwargs["callback_steps"] = legacy, 1
    try:
        with torch.inference_mode():
            out = pipe(**kwargs)
    except Stopped:
        raise
    except NOT_THE_CALLERS:
        raise
    except CALLER_CAUSED as exc:
        raise PipelineRefused(type(pipe).__name__, exc) from exc
    return list(out.images)
