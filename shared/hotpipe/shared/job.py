"""The public job contract: what callers submit and the record they read back.

Request models forbid unknown fields and use strict types, so a typo or a wrong type
is a 422 naming the field instead of a silently ignored or coerced value.  Limits that
depend on the deployment (max steps, max side, ...) are checked by the producer with
the settings in hand; the bounds here are the hard ceilings of the contract.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StringConstraints

from hotpipe.shared.status import Status

#: generated ids are 32 hex digits; ``PUT /v1/jobs/{id}`` lets the caller choose one of these
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class Task(StrEnum):
    """What the caller wants done; the pipeline class follows from task + checkpoint."""

    TEXT2IMAGE = "text2image"
    IMAGE2IMAGE = "image2image"
    INPAINTING = "inpainting"


#: inputs each task needs (required) and may take (allowed)
TASK_INPUTS: dict[Task, tuple[frozenset[str], frozenset[str]]] = {
    Task.TEXT2IMAGE: (frozenset(), frozenset({"control_image"})),
    Task.IMAGE2IMAGE: (frozenset({"image"}), frozenset({"image", "control_image"})),
    Task.INPAINTING: (frozenset({"image", "mask_image"}), frozenset({"image", "mask_image", "control_image"})),
}

OutputFormat = Literal["png", "webp", "jpeg"]
WebhookEvent = Literal["start", "progress", "completed"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("start", "progress", "completed")
ImageRef = Annotated[str, Strict(), StringConstraints(pattern=r"^(data:|s3://|https?://)", max_length=64 * 1024 * 1024)]
Side = Annotated[int, Strict(), Field(ge=8, le=16384, multiple_of=8)]


def _number(value: object) -> object:
    # JSON numbers only: "7.5" or true would otherwise be coerced silently.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


Number = Annotated[float, BeforeValidator(_number)]
Text = Annotated[str, Strict()]
Int = Annotated[int, Strict()]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Params(_Strict):
    """Arguments of the pipeline call; ``seed`` is the caller's handle on randomness.

    Any other argument the resolved pipeline's ``__call__`` accepts (``pag_scale``,
    ``controlnet_conditioning_scale``, ``guidance_rescale``, ...) passes through as a JSON
    scalar or a short list of them; the producer checks it against that pipeline
    (``shared/hotpipe/shared/call_args.py``).  Tensors, callbacks, ``generator`` and ``output_type`` never do.
    """

    model_config = ConfigDict(extra="allow")

    prompt: Annotated[Text, StringConstraints(min_length=1)]
    negative_prompt: Text | None = None
    num_inference_steps: Annotated[Int, Field(ge=1, le=10_000)] | None = None
    guidance_scale: Annotated[Number, Field(ge=0.0, le=100.0, allow_inf_nan=False)] | None = None
    strength: Annotated[Number, Field(gt=0.0, le=1.0, allow_inf_nan=False)] | None = None
    height: Side | None = None
    width: Side | None = None
    num_images: Annotated[Int, Field(ge=1, le=64)] = 1
    seed: Annotated[Int, Field(ge=0, le=2**63 - 1)] | None = None


class Inputs(_Strict):
    """Input images as ``data:`` URIs or ``s3://bucket/key`` references in our bucket."""

    image: ImageRef | None = None
    mask_image: ImageRef | None = None
    control_image: ImageRef | None = None

    def given(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


#: a scheduler config override: a JSON boolean, number or string
SchedulerValue = Annotated[bool, Strict()] | Int | Annotated[float, Strict(), Field(allow_inf_nan=False)] | Text
#: name -> value, at most 16 of them (``shared/hotpipe/shared/schedulers.py`` checks names and values)
SchedulerConfig = Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], SchedulerValue],
                            Field(max_length=16)]


class SchedulerChoice(BaseModel):
    """The scheduler a job runs with: a Diffusers scheduler class built from the checkpoint's own scheduler
    config plus ``config``; ``sampler`` is the familiar name the request used (``"DPM++ 2M Karras"``), if any."""

    name: str
    config: dict[str, bool | int | float | str] = Field(default_factory=dict)
    sampler: str | None = None


class LoraRequest(_Strict):
    """One LoRA adapter for a job: a folder under the model root holding ``pytorch_lora_weights.safetensors``
    (Diffusers' ``save_lora_weights`` layout) or a Hub repo id, with ``weight_name`` for another file in it."""

    name: Annotated[Text, StringConstraints(min_length=1, max_length=256)]
    #: how strongly the adapter applies: 0 is no effect, 1 full; at most 4 either way
    scale: Annotated[Number, Field(ge=-4.0, le=4.0, allow_inf_nan=False)] = 1.0
    weight_name: Annotated[Text, StringConstraints(min_length=1, max_length=128)] | None = None


class LoraChoice(BaseModel):
    """A job's LoRA as the record shows it (the run spec adds where it lives: ``spec.LoraSpec``)."""

    name: str
    scale: float
    weight_name: str


def _unset(value: object) -> bool:
    return value is None


class JobRequest(_Strict):
    """Body of ``POST /v1/jobs``."""

    checkpoint: Annotated[Text, StringConstraints(min_length=1, max_length=256)]
    revision: Annotated[Text, StringConstraints(pattern=r"^[\w.\-/]{1,128}$")] | None = None
    task: Task
    params: Params
    inputs: Inputs = Field(default_factory=Inputs)
    controlnet: Annotated[Text, StringConstraints(min_length=1, max_length=256)] | None = None
    #: Perturbed-Attention Guidance: true runs the family's PAG pipeline, false its plain one
    enable_pag: Annotated[bool, Strict()] | None = None
    #: a Diffusers scheduler class (``EulerAncestralDiscreteScheduler``) or a familiar sampler name
    #: (``"DPM++ 2M Karras"``, ``"Euler a"``) the pipeline class takes; default: the checkpoint's own
    scheduler: Annotated[Text, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, exclude_if=_unset)
    #: overrides of the scheduler's config (``use_karras_sigmas``, ``timestep_spacing``, ``algorithm_type``, ...)
    scheduler_config: SchedulerConfig | None = Field(default=None, exclude_if=_unset)
    #: LoRA adapters applied for this job only (at most ``HOTPIPE_MAX_LORAS``, default 4)
    loras: Annotated[list[LoraRequest], Field(max_length=16)] | None = Field(default=None, exclude_if=_unset)
    output_format: OutputFormat = "png"
    #: 0 (least urgent) to 9 (most urgent); a queued job with a higher priority runs first
    priority: Annotated[Int, Field(ge=0, le=9)] = 5
    #: seconds the job may run (loading included) before it ends failed with code ``timeout``
    timeout_s: Annotated[Number, Field(gt=0, le=7 * 24 * 3600, allow_inf_nan=False)] | None = None
    #: seconds the job may wait to start; after that it ends failed with code ``deadline_exceeded``
    queue_timeout_s: Annotated[Number, Field(gt=0, le=7 * 24 * 3600, allow_inf_nan=False)] | None = None
    #: http(s) URL told about the job's events (signed; see the README's webhooks section)
    webhook_url: Annotated[Text, StringConstraints(min_length=1, max_length=2048)] | None = None
    #: which events go to ``webhook_url``: ``start``, ``progress`` (throttled), ``completed``
    webhook_events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=3)] = Field(
        default_factory=lambda: list(WEBHOOK_EVENTS))


class Stage(StrEnum):
    """Where a job is inside its status: the worker's stages while running, then finished."""

    QUEUED = "queued"
    LOADING = "loading"
    RUNNING = "running"
    UPLOADING = "uploading"
    FINISHED = "finished"


class Progress(BaseModel):
    step: int
    total: int


class ImageResult(BaseModel):
    url: str | None = None
    key: str
    width: int
    height: int
    content_type: str
    sha256: str


class JobResult(BaseModel):
    images: list[ImageResult]
    sidecar_key: str | None = None
    #: seconds spent in each worker stage: load (pipeline from the cache, 0 when hot),
    #: inputs, run (denoising and decoding), encode, upload
    timings: dict[str, float] = Field(default_factory=dict)


class JobError(BaseModel):
    code: str
    message: str


class JobRecord(BaseModel):
    """What ``GET /v1/jobs/{id}`` returns."""

    id: str
    #: who submitted it (the API key's tenant); other tenants never see the job
    tenant: str = "default"
    status: Status
    family: str
    pipeline: str
    checkpoint: str
    revision: str | None = None
    task: Task
    progress: Progress | None = None
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: JobResult | None = None
    error: JobError | None = None
    cancel_requested: bool = False
    #: the current stage, and when the current attempt entered each one (queue wait is
    #: loading_at - queued_at, load time running_at - loading_at)
    stage: Stage | None = None
    queued_at: datetime | None = None
    loading_at: datetime | None = None
    running_at: datetime | None = None
    uploading_at: datetime | None = None
    timeout_s: float | None = None
    queue_timeout_s: float | None = None
    #: when a job that has not started ends failed (``deadline_exceeded``)
    queue_deadline: datetime | None = None
    #: the scheduler the job chose (class, overrides, sampler name); None: the checkpoint's own
    scheduler: SchedulerChoice | None = None
    #: the LoRA adapters the job applies, with their scales
    loras: list[LoraChoice] | None = None


class JobList(BaseModel):
    """What ``GET /v1/jobs`` returns: a page of records, newest first."""

    jobs: list[JobRecord]
    #: pass as ``cursor`` for the next page; absent on the last page
    next_cursor: str | None = None


class Upload(BaseModel):
    """What ``POST /v1/uploads`` returns: an ``s3://`` reference to use in ``inputs``."""

    uri: str
    key: str
    width: int
    height: int
    content_type: str
    size: int
    sha256: str


def new_job_id() -> str:
    return uuid.uuid4().hex
