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

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


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
    """Arguments of the pipeline call; ``seed`` is the caller's handle on randomness."""

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


class JobRequest(_Strict):
    """Body of ``POST /v1/jobs``."""

    checkpoint: Annotated[Text, StringConstraints(min_length=1, max_length=256)]
    revision: Annotated[Text, StringConstraints(pattern=r"^[\w.\-/]{1,128}$")] | None = None
    task: Task
    params: Params
    inputs: Inputs = Field(default_factory=Inputs)
    controlnet: Annotated[Text, StringConstraints(min_length=1, max_length=256)] | None = None
    output_format: OutputFormat = "png"
    #: 0 (least urgent) to 9 (most urgent); a queued job with a higher priority runs first
    priority: Annotated[Int, Field(ge=0, le=9)] = 5


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


def new_job_id() -> str:
    return uuid.uuid4().hex
