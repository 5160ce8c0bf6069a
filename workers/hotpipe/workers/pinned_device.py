"""Hot pipelines answer their execution device without walking every module.

Diffusers' ``DiffusionPipeline._execution_device`` looks for offload hooks on every module of every
component each time it is read (``hasattr`` on each module, failing through ``nn.Module.__getattr__``),
and a pipeline reads it several times per call: ~2 ms a read on the tiny SD on CPU, and more once LoRA
adapters are loaded (PEFT wraps each adapted layer in several modules, ~1.9x the modules on the tiny SD).
A worker never offloads (each pipeline is moved whole to the worker's device, and nothing adds hooks
later), so the answer can't change while the pipeline is hot: it is read once with Diffusers' own
property when the cache builds the pipeline and kept on the instance.  The class is swapped for a
subclass of the same name that only overrides this property, so ``type(pipe).__name__``,
``isinstance`` checks and ``from_pipe`` see the class Diffusers built; the computation and pixels are
unchanged (``tests/workers/test_pinned_device.py``).
"""

from __future__ import annotations

import threading
from typing import Any

import torch

#: instance attribute holding the pinned device
ATTR = "_hotpipe_execution_device"
_classes: dict[type, type] = {}
_lock = threading.Lock()


class PinnedDevice:
    """Mixin in front of a pipeline class: ``_execution_device`` is the device recorded by ``pin``."""

    @property
    def _execution_device(self) -> torch.device:
        device: torch.device = self.__dict__[ATTR]
        return device


def pin(pipe: Any) -> Any:
    """``pipe`` with its execution device read now (Diffusers' own answer) and kept; returns ``pipe``."""
    if isinstance(pipe, PinnedDevice):
        return pipe
    cls = type(pipe)
    device = cls._execution_device.fget(pipe)  # the property's own answer, before the swap
    pipe.__dict__[ATTR] = device  # not setattr: DiffusionPipeline.__setattr__ may write to its config
    pipe.__class__ = pinned_class(cls)
    return pipe


def pinned_class(cls: type) -> type:
    """The subclass of ``cls`` (same name and module) that answers the pinned device; one per class."""
    with _lock:
        pinned = _classes.get(cls)
        if pinned is None:
            pinned = type(cls.__name__, (PinnedDevice, cls), {"__module__": cls.__module__,
                                                              "__qualname__": cls.__qualname__})
            _classes[cls] = pinned
        return pinned
