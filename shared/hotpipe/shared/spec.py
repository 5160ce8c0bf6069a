"""The run spec: what the producer resolved and checked, and the worker runs, for one job.

It is the private half of a job record (the ``spec`` field, JSON), written once at submit
(``producer/hotpipe/producer/service.py``) and read by the worker, the reaper and the
drains.  Its field names are the wire format: records written by earlier versions must
still parse, so a field is never renamed, and fields this version does not know are
ignored (a newer producer's, during a rolling upgrade).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hotpipe.shared.celery_app import DEFAULT_PRIORITY
from hotpipe.shared.checkpoints import Resolved
from hotpipe.shared.job import LoraChoice, OutputFormat, SchedulerChoice, Task


class LoraSpec(LoraChoice):
    """A LoRA the worker loads: the file the producer checked, and the adapter name it goes by."""

    source: Literal["local", "hub"]
    #: the folder (local) or the Hub repo id
    location: str
    revision: str | None = None
    #: the adapter's name in the pipeline: one per (source, location, revision, file), never per job
    adapter: str


class JobSpec(BaseModel):
    """How to run a job: the resolved checkpoint, the task, its call arguments and inputs."""

    model_config = ConfigDict(frozen=True)

    #: the checkpoint (and ControlNet or connected prior) the producer resolved, and the exact class
    resolved: Resolved
    task: Task
    #: the pipeline call's arguments as the producer checked them, ``seed`` always set.  A plain dict
    #: in the caller's order: it is written as is into the sidecar and the images' metadata.
    params: dict[str, Any]
    #: input name (``image``, ``mask_image``, ``control_image``) -> its object key in storage
    inputs: dict[str, str] = Field(default_factory=dict)
    output_format: OutputFormat = "png"
    #: 0 (least urgent) to 9 (most urgent): requeues, drains and re-sends queue the job like its first message
    priority: int = DEFAULT_PRIORITY
    #: seconds the job may run (loading included); None: no limit of its own
    timeout_s: float | None = None
    #: the scheduler to build for the run from the checkpoint's scheduler config; None: the checkpoint's own
    #: (left out of the JSON then, so a job without controls is written exactly as before)
    scheduler: SchedulerChoice | None = Field(default=None, exclude_if=lambda v: v is None)
    #: LoRA adapters to activate for the run, in the caller's order (left out of the JSON when none)
    loras: list[LoraSpec] = Field(default_factory=list, exclude_if=lambda v: not v)

    @property
    def seed(self) -> int:
        """The seed of the job's generator (the producer draws one when the caller gave none)."""
        return int(self.params["seed"])

    @property
    def num_images(self) -> int:
        """How many images the call makes (the request's default, 1, when the params leave it out)."""
        return int(self.params.get("num_images", 1))
