"""The in-process cache of hot pipelines: load a checkpoint once, switch tasks for free.

A checkpoint is loaded once per worker process; every other task on it is built with
``AutoPipelineFor<Task>.from_pipe``, which reuses the same module objects (and is given
the dtype, or Diffusers would cast the shared weights to float32 in place).  A task
AutoPipeline can't reach but hotpipe's own table names (``shared/beyond_auto.py``) is
built the same way with that class's ``from_pipe``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import diffusers
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
)

from hotpipe.shared.families import BEYOND_TASK_TABLES, family_of
from hotpipe.shared.job import Task
from hotpipe.workers import loading

log = logging.getLogger(__name__)

AUTO_CLASSES: dict[Task, Any] = {
    Task.TEXT2IMAGE: AutoPipelineForText2Image,
    Task.IMAGE2IMAGE: AutoPipelineForImage2Image,
    Task.INPAINTING: AutoPipelineForInpainting,
}


class ResolutionMismatch(RuntimeError):
    """The worker's Diffusers resolved a different class than the producer recorded."""


@dataclass
class _Entry:
    base: Any
    by_class: dict[str, Any] = field(default_factory=dict)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    load_seconds: float = 0.0


class PipelineCache:
    """Pipelines by (location, revision, dtype); each holds its task siblings by class name."""

    def __init__(self, device: str, dtype: torch.dtype, allow_pickle: bool = False):
        self.allow_pickle = allow_pickle
        self.device = device
        self.dtype = dtype
        self.stats = CacheStats()
        self._entries: dict[tuple[str, str | None], _Entry] = {}
        self._extras: dict[loading.ExtraRef, Any] = {}
        self._lock = threading.Lock()

    def get(self, location: str, revision: str | None, task: Task, pipeline: str,
            extra: loading.ExtraRef | None = None) -> Any:
        """The pipeline of class ``pipeline`` for ``task`` on the checkpoint at ``location`` (built with
        ``extra`` — a ControlNet model, or a decoder's connected prior — when given)."""
        with self._lock:
            entry = self._entries.get((location, revision))
            if entry is None:
                self.stats.misses += 1
                entry = self._entries[(location, revision)] = _Entry(self._load(location, revision))
            else:
                self.stats.hits += 1
            key = pipeline if extra is None else f"{pipeline}+{extra}"
            if key not in entry.by_class:
                entry.by_class[key] = self._switch(entry.base, task, pipeline, extra)
            return entry.by_class[key]

    def _extra(self, ref: loading.ExtraRef) -> Any:
        """One ControlNet model / prior per checkpoint, shared by every pipeline that uses it."""
        if ref not in self._extras:
            self._extras[ref] = loading.load_extra(ref, self.dtype, self.device, self.allow_pickle)
        return self._extras[ref]

    def _load(self, location: str, revision: str | None) -> Any:
        start = time.perf_counter()
        pipe = loading.load_checkpoint(location, revision, self.dtype, self.device, self.allow_pickle)
        took = time.perf_counter() - start
        self.stats.load_seconds += took
        log.info("loaded %s (%s) in %.2fs", location, type(pipe).__name__, took)
        return pipe

    def _switch(self, base: Any, task: Task, pipeline: str, extra: loading.ExtraRef | None = None) -> Any:
        if type(base).__name__ == pipeline and extra is None:
            return base
        if extra is None:
            pipe = self._from_pipe(base, task, pipeline)
        else:
            model = self._extra(extra)
            pipe = loading.build(base, task, pipeline, self.dtype, **{extra.role: model})
        if type(pipe).__name__ != pipeline:
            raise ResolutionMismatch(f"Diffusers resolved {type(pipe).__name__} for {task.value}, "
                                     f"but the job was routed for {pipeline}")
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _from_pipe(self, base: Any, task: Task, pipeline: str) -> Any:
        """``pipeline`` on ``base``'s modules: by hotpipe's table when it names ``pipeline`` for
        ``base``'s family and ``task``, else by AutoPipeline (which the guard above then checks)."""
        family = family_of(type(base).__name__)
        if family is not None and BEYOND_TASK_TABLES[task].get(family) == pipeline:
            return getattr(diffusers, pipeline).from_pipe(base, dtype=self.dtype)
        return loading.build(base, task, pipeline, self.dtype)  # AutoPipeline's, or a variant (PAG)
