"""From a job's resolved spec to the pipeline that runs it: base checkpoint, ControlNet, variant class.

The producer resolved everything (``shared/hotpipe/shared/checkpoints.py``): the checkpoint, the exact
pipeline class, and for a ControlNet job the ControlNet checkpoint.  Here that becomes
objects: the checkpoint loads once (the hot cache), a ControlNet model loads once per
ControlNet checkpoint, and the class the job names is built on the checkpoint's modules
with ``from_pipe`` — plus the ControlNet model as its ``controlnet`` module.  A decoder
checkpoint (Kandinsky) runs as the combined pipeline, built from its modules and those of
the prior its model card names (loaded once, like any checkpoint).  A class
AutoPipeline reaches from the checkpoint by task alone is built by AutoPipeline (so its
choice is checked against the producer's); a variant (ControlNet, PAG) or a class from
hotpipe's own table is built by that class's own ``from_pipe``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import diffusers
import torch
from diffusers import DiffusionPipeline

from hotpipe.shared.checkpoints import Resolved
from hotpipe.shared.families import TASK_TABLES, family_of
from hotpipe.shared.job import Task
from hotpipe.shared.variants import split, variants_of
from hotpipe.workers import pinned_device
from hotpipe.workers.safe_loading import load_kwargs, refuse_unsafe

log = logging.getLogger(__name__)


#: what an extra checkpoint is to the job's pipeline: its ``controlnet`` module, or the connected
#: prior pipeline whose modules a combined pipeline takes as ``prior_<name>``
Role = Literal["controlnet", "prior"]


@dataclass(frozen=True)
class ExtraRef:
    """A second checkpoint a job's pipeline is built with: enough to load it, hashable as a cache key."""

    role: Role
    location: str
    revision: str | None
    class_name: str

    @classmethod
    def from_spec(cls, resolved: Resolved) -> ExtraRef | None:
        """The ControlNet or the connected prior the producer resolved for a job; None: neither."""
        if resolved.controlnet is not None:
            cn = resolved.controlnet
            return cls("controlnet", cn.location, cn.revision, cn.class_name)
        if resolved.prior is not None:
            prior = resolved.prior
            return cls("prior", prior.location, prior.revision, prior.class_name)
        return None


def load_extra(ref: ExtraRef, dtype: torch.dtype, device: str, allow_pickle: bool = False) -> Any:
    """The ControlNet model or the prior pipeline ``ref`` names."""
    if ref.role == "prior":
        return load_checkpoint(ref.location, ref.revision, dtype, device, allow_pickle)
    return load_controlnet(ref, dtype, device, allow_pickle)


def load_checkpoint(location: str, revision: str | None, dtype: torch.dtype, device: str,
                    allow_pickle: bool = False, variant: str | None = None) -> Any:
    """A whole checkpoint as the pipeline class it was saved as (safetensors only unless ``allow_pickle``)."""
    try:
        pipe = DiffusionPipeline.from_pretrained(location, revision=revision, dtype=dtype, variant=variant,
                                                 **load_kwargs(allow_pickle))
    except OSError as exc:
        raise refuse_unsafe(exc, location) from exc
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pinned_device.pin(pipe)  # hot from now on: its execution device can't change


def load_controlnet(ref: ExtraRef, dtype: torch.dtype, device: str, allow_pickle: bool = False) -> Any:
    """A ControlNet model (``ControlNetModel``, ``ControlNetUnionModel``, ...) from its checkpoint."""
    start = time.perf_counter()
    try:
        safetensors = load_kwargs(allow_pickle)["use_safetensors"]  # a model has no remote code to refuse
        model = getattr(diffusers, ref.class_name).from_pretrained(ref.location, revision=ref.revision, dtype=dtype,
                                                                   use_safetensors=safetensors)
    except OSError as exc:
        raise refuse_unsafe(exc, ref.location) from exc
    model.to(device)
    log.info("loaded ControlNet %s (%s) in %.2fs", ref.location, ref.class_name, time.perf_counter() - start)
    return model


def build(base: Any, task: Task, pipeline: str, dtype: torch.dtype, controlnet: Any = None,
          prior: Any = None) -> Any:
    """``pipeline`` on ``base``'s modules (and ``controlnet``, or a connected ``prior`` pipeline's modules,
    when given), sharing their weights."""
    if prior is not None:
        # what DiffusionPipeline.from_pretrained does for a connected pipeline: prior modules as prior_<name>
        components = {**base.components, **{f"prior_{name}": m for name, m in prior.components.items()}}
        return getattr(diffusers, pipeline)(**components)
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
