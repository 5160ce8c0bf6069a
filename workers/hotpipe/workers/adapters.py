"""LoRA adapters on hot pipelines: loaded once per checkpoint, activated per job, never fused.

Adapters are loaded into the pipeline's own modules with PEFT through Diffusers'
``load_lora_weights(adapter_name=...)``; a cache entry's task siblings share those modules, so
an adapter loaded for one task serves them all.  Each run activates exactly its job's adapters
and scales (``set_adapters``); a job without LoRAs runs with every adapter disabled
(``disable_lora``), which gives the pixels of a pipeline that never saw one.  Weights are never
fused: other jobs share them.  PEFT's LoRA ``Linear`` layers run ``lora_fast``'s lean forward (the same
operations as PEFT's, less its per-call overhead; PEFT's own in every case it does not cover).  The
adapters resident on a pipeline are kept in recency order on its denoiser module (so they die with it when
the cache evicts the pipeline); past ``max_resident`` the least recently used one the job does not need is
deleted (``delete_adapters``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotpipe.shared.spec import LoraSpec
from hotpipe.workers import lora_fast

log = logging.getLogger(__name__)
#: attribute on the denoiser module: adapter name -> its bytes, least recently used first
RESIDENT = "_hotpipe_adapters"
#: attribute on the denoiser module: what the last activation left active
ACTIVE = "_hotpipe_active_adapters"
#: the pipeline components LoRA layers may land in
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")


@dataclass
class AdapterStats:
    """Adapter hits, loads and evictions in this process, and the seconds the loads took."""

    hits: int = 0
    loads: int = 0
    evictions: int = 0
    load_seconds: float = 0.0


@dataclass
class Adapters:
    """Keeps LoRA adapters resident on hot pipelines and activates a job's for its run."""

    max_resident: int = 8
    stats: AdapterStats = field(default_factory=AdapterStats)
    #: told of each ``hit``, ``load`` and ``eviction`` (the worker's metrics); None: nobody listens
    count: Callable[[str], None] | None = None
    #: adapter name -> the LoRA's name, for the registry
    names: dict[str, str] = field(default_factory=dict)

    def _count(self, event: str) -> None:
        if self.count is not None:
            self.count(event)

    def activate(self, pipe: Any, loras: list[LoraSpec]) -> int:
        """Make exactly ``loras`` (with their scales) active on ``pipe``; none: every adapter off.  Returns the
        bytes the pipeline's adapters grew by (loads minus deletions), for the cache's budget.
        ``enable_lora`` + ``set_adapters`` walk every module (~1.3 ms each on the tiny SD), so a job that wants
        what the last one left active skips them, and one that follows another LoRA job skips ``enable_lora``."""
        resident = resident_on(pipe)
        before = sum(resident.values())
        want = tuple((lora.adapter, lora.scale) for lora in loras)
        if not loras:
            if resident and active_on(pipe) != want:
                pipe.disable_lora()
                set_active(pipe, want)
            return 0
        for lora in loras:
            if lora.adapter in resident:
                resident.move_to_end(lora.adapter)
                self.stats.hits += 1
                self._count("hit")
            else:
                resident[lora.adapter] = self._load(pipe, lora)
                self.names[lora.adapter] = lora.name
        self._evict(pipe, resident, keep={lora.adapter for lora in loras})
        last = active_on(pipe)
        if last != want:
            if not last:  # only a disable_lora (or what is unknown) needs undoing: LoRA to LoRA is set_adapters alone
                pipe.enable_lora()
            pipe.set_adapters([lora.adapter for lora in loras], [lora.scale for lora in loras])
            set_active(pipe, want)
        return sum(resident.values()) - before

    def _load(self, pipe: Any, lora: LoraSpec) -> int:
        if not lora.weight_name.endswith(".safetensors"):  # the producer refused it; never unpickle
            raise ValueError(f"LoRA {lora.name}: {lora.weight_name} is not a safetensors file")
        started = time.perf_counter()
        folder = weights_folder(lora)
        set_active(pipe, None)  # loading activates the new adapter: what is active is no longer known
        pipe.load_lora_weights(folder, weight_name=lora.weight_name, adapter_name=lora.adapter,
                               use_safetensors=True, local_files_only=True)
        lora_fast.install(pipe)  # the layers PEFT just wrapped (or grew) run the lean forward
        self.stats.loads += 1
        self._count("load")
        self.stats.load_seconds += time.perf_counter() - started
        size = adapter_bytes(pipe, lora.adapter)
        log.info("loaded LoRA %s as %s (%d bytes) in %.3fs", lora.name, lora.adapter, size,
                 time.perf_counter() - started)
        return size

    def _evict(self, pipe: Any, resident: OrderedDict[str, int], keep: set[str]) -> None:
        while len(resident) > self.max_resident:
            victim = next((name for name in resident if name not in keep), None)
            if victim is None:
                return
            self.delete(pipe, victim)

    def delete(self, pipe: Any, adapter: str) -> None:
        """Remove one resident adapter from ``pipe`` (and its task siblings) and free its weights."""
        set_active(pipe, None)
        pipe.delete_adapters(adapter)
        resident_on(pipe).pop(adapter, None)
        self.stats.evictions += 1
        self._count("eviction")

    def loras_on(self, pipe: Any) -> list[str]:
        """The LoRAs resident on ``pipe`` by name, least recently used first (for ``GET /v1/workers``)."""
        return [self.names.get(adapter, adapter) for adapter in resident_on(pipe)]


def weights_folder(lora: LoraSpec) -> str:
    """The local folder holding the LoRA's file: its own folder, or for a Hub LoRA the Hub cache's snapshot of
    the commit the producer checked, downloaded (that one safetensors file only) through ``huggingface_hub``
    when missing — which honours ``HF_ENDPOINT`` and, with ``HF_HUB_OFFLINE``, uses the cache alone."""
    if lora.source != "hub":
        return lora.location
    from huggingface_hub import hf_hub_download

    return str(Path(hf_hub_download(lora.location, lora.weight_name, revision=lora.revision)).parent)


def resident_on(pipe: Any) -> OrderedDict[str, int]:
    """The adapters loaded into ``pipe``'s modules (shared by its task siblings), least recently used first."""
    module = denoiser(pipe)
    resident: OrderedDict[str, int] | None = getattr(module, RESIDENT, None)
    if resident is None:
        resident = OrderedDict()
        object.__setattr__(module, RESIDENT, resident)
    return resident


def denoiser(pipe: Any) -> Any:
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def active_on(pipe: Any) -> tuple[tuple[str, float], ...] | None:
    """The (adapter, scale)s the last activation left on ``pipe``'s modules (``()``: all off; None: unknown)."""
    active: tuple[tuple[str, float], ...] | None = getattr(denoiser(pipe), ACTIVE, None)
    return active


def set_active(pipe: Any, active: tuple[tuple[str, float], ...] | None) -> None:
    object.__setattr__(denoiser(pipe), ACTIVE, active)


def resident_adapters(pipe: Any) -> list[str]:
    """The adapter names resident on ``pipe`` (for the registry)."""
    return list(resident_on(pipe))


def adapter_bytes(pipe: Any, adapter: str) -> int:
    """Measured bytes of one adapter's parameters across the pipeline's components."""
    total = 0
    for name in COMPONENTS:
        module = getattr(pipe, name, None)
        if module is None or not hasattr(module, "named_parameters"):
            continue
        total += sum(p.numel() * p.element_size() for n, p in module.named_parameters() if f".{adapter}." in n)
    return total
