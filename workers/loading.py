"""From a job's resolved spec to the pipeline that runs it: base checkpoint, ControlNet, variant class.

The producer resolved everything (``shared/checkpoints.py``): the checkpoint, the exact
pipeline class, and for a ControlNet job the ControlNet checkpoint.  Here that becomes
objects: the checkpoint loads once (the hot cache), a ControlNet model loads once per
ControlNet checkpoint, and the class the job names is built on the checkpoint's modules
with ``from_pipe`` — plus the ControlNet model as its ``controlnet`` module.  A class
AutoPipeline reaches from the checkpoint by task alone is built by AutoPipeline (so its
choice is checked against the producer's); a variant (ControlNet, PAG) or a class from
hotpipe's own table is built by that class's own ``from_pipe``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import diffusers
import torch
from diffusers import DiffusionPipeline

from hotpipe.shared.families import TASK_TABLES, family_of
from hotpipe.shared.job import Task
from hotpipe.shared.variants import split, variants_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlNetRef:
    """Which ControlNet checkpoint a job uses: enough to load it, and hashable as a cache key."""

    location: str
    revision: str | None
    class_name: str

    @classmethod
    def from_spec(cls, resolved: dict[str, Any]) -> ControlNetRef | None:
        cn = resolved.get("controlnet")
        return None if cn is None else cls(cn["location"], cn["revision"], cn["class_name"])


def pipeline_for(cache: Any, spec: dict[str, Any], pipeline: str) -> Any:
    """The pipeline of class ``pipeline`` for the job ``spec``, from the worker's hot cache."""
    resolved = spec["resolved"]
    return cache.get(resolved["location"], resolved["revision"], Task(spec["task"]), pipeline,
                     controlnet=ControlNetRef.from_spec(resolved))


def load_checkpoint(location: str, revision: str | None, dtype: torch.dtype, device: str) -> Any:
    """A whole checkpoint as the pipeline class it was saved as."""
    pipe = DiffusionPipeline.from_pretrained(location, revision=revision, dtype=dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_controlnet(ref: ControlNetRef, dtype: torch.dtype, device: str) -> Any:
    """A ControlNet model (``ControlNetModel``, ``ControlNetUnionModel``, ...) from its checkpoint."""
    start = time.perf_counter()
    model = getattr(diffusers, ref.class_name).from_pretrained(ref.location, revision=ref.revision, dtype=dtype)
    model.to(device)
    log.info("loaded ControlNet %s (%s) in %.2fs", ref.location, ref.class_name, time.perf_counter() - start)
    return model


def build(base: Any, task: Task, pipeline: str, dtype: torch.dtype, controlnet: Any = None) -> Any:
    """``pipeline`` on ``base``'s modules (and ``controlnet``, when given), sharing their weights."""
    if type(base).__name__ == pipeline and controlnet is None:
        return base
    if controlnet is None and pipeline not in variant_classes(type(base).__name__, task):
        # AutoPipeline's own choice; the cache checks it is the class the producer resolved
        return AUTO_CLASSES[task].from_pipe(base, dtype=dtype)
    extra = {} if controlnet is None else {"controlnet": controlnet}
    return getattr(diffusers, pipeline).from_pipe(base, dtype=dtype, **extra)


def variant_classes(class_name: str, task: Task) -> set[str]:
    """The ControlNet / PAG classes of ``class_name``'s family for ``task``."""
    family = family_of(class_name)
    if family is None:
        return set()
    return {TASK_TABLES[task][v.key] for v, tasks in variants_of(split(family).base).items()
            if task in tasks and v.key is not None and (v.controlnet or v.pag)}


AUTO_CLASSES: dict[Task, Any] = {
    Task.TEXT2IMAGE: diffusers.AutoPipelineForText2Image,
    Task.IMAGE2IMAGE: diffusers.AutoPipelineForImage2Image,
    Task.INPAINTING: diffusers.AutoPipelineForInpainting,
}
