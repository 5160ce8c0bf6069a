"""What pipelines hold in memory, measured, and how to give it back.

Bytes are counted from the tensors themselves, never from file sizes: the unique
storages behind every parameter and buffer of a pipeline's modules, so modules shared
between ``from_pipe`` siblings (or between checkpoints) count once.  On CUDA the
allocator's own count (``torch.cuda.memory_allocated``) is read around each load too.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable
from typing import Any

import torch

#: errors that mean "the device (or host) ran out of memory"
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)


def storages(pipes: Iterable[Any]) -> dict[tuple[str, int], int]:
    """(device, data pointer) -> bytes of every unique tensor storage the pipelines' modules hold."""
    seen: dict[tuple[str, int], int] = {}
    for pipe in pipes:
        for module in getattr(pipe, "components", {}).values():
            if not isinstance(module, torch.nn.Module):
                continue
            for tensor in (*module.parameters(), *module.buffers()):
                storage = tensor.untyped_storage()
                seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return seen


def same_modules(pipes: list[Any]) -> bool:
    """Whether every pipeline's modules are the first one's (``from_pipe`` siblings that added none)."""
    def modules(pipe: Any) -> set[int]:
        return {id(m) for m in getattr(pipe, "components", {}).values() if isinstance(m, torch.nn.Module)}
    first = modules(pipes[0]) if pipes else set()
    return all(modules(p) <= first for p in pipes[1:])


def settle() -> None:
    """After the imports, before any load: collect once, then freeze what survived.

    ``gc.collect()`` after an eviction then scans only what was made since (pipelines),
    not the hundreds of thousands of objects torch, Diffusers and Transformers leave at
    import (a full collection of those takes ~0.3-1 s).
    """
    gc.collect()
    gc.freeze()


def storage_bytes(pipes: Iterable[Any]) -> int:
    """Bytes of the unique tensor storages behind ``pipes`` (shared modules counted once)."""
    return sum(storages(pipes).values())


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def cuda_allocated(device: str) -> int:
    """Bytes the CUDA caching allocator has handed out on ``device`` (0 off CUDA)."""
    return int(torch.cuda.memory_allocated(torch.device(device))) if is_cuda(device) else 0


def release(device: str) -> None:
    """Collect garbage now and hand cached CUDA blocks back to the driver."""
    gc.collect()
    if is_cuda(device) and torch.cuda.is_available():
        torch.cuda.empty_cache()


def drop_hooks(pipe: Any) -> None:
    """Remove accelerate offload hooks, which keep references to the pipeline's modules."""
    remove = getattr(pipe, "remove_all_hooks", None)
    if callable(remove) and getattr(pipe, "_all_hooks", None):
        remove()


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 where it can't be read)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
