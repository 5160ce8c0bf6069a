"""The model catalog: what can be run, read from the model root torch-free, as submit resolves it.

Each folder under the model root (or one level deeper, ``org/name``) is offered to the
``SCANNERS`` in turn; the first that recognises it makes its entry.  A checkpoint
(``model_index.json``) is resolved for every task exactly as a submit would (``checkpoints.resolve``),
so the tasks listed are the tasks a job may ask for; a ControlNet (``config.json`` naming a
ControlNet class) lists the family it fits, and so does a LoRA (its safetensors header, as the
submit check reads it).  A scan is kept ``models_cache_s`` seconds per
process, so listing costs no file reads most of the time.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotpipe.shared.checkpoints import (
    MODEL_CONFIG,
    MODEL_INDEX,
    controlnet_families,
    read_index,
    resolve,
)
from hotpipe.shared.errors import HotpipeError
from hotpipe.shared.job import Task
from hotpipe.shared.loras import LORA_FILE, header_shape
from hotpipe.shared.variants import CONTROLNET_MODELS

#: what the catalog says owns its models (OpenAI's ``owned_by``)
OWNER = "hotpipe"


@dataclass(frozen=True)
class Model:
    """One entry: OpenAI's model object (``id``, ``object``, ``created``, ``owned_by``) and hotpipe's fields."""

    id: str
    kind: str  # "checkpoint", "controlnet" or "lora"
    created: int
    class_name: str  # a LoRA's: the weights file (it has no class)
    family: str | None = None
    #: task -> the pipeline class a job of that task runs (checkpoints)
    pipelines: dict[str, str] = field(default_factory=dict)
    #: why a checkpoint runs no task (it does not resolve)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": "model", "created": self.created, "owned_by": OWNER,
                               "kind": self.kind, "family": self.family, "class_name": self.class_name}
        if self.kind == "checkpoint":
            out["tasks"] = list(self.pipelines)
            out["pipelines"] = self.pipelines
        if self.error:
            out["error"] = self.error
        return out


#: (name under the root, its folder, the model root) -> an entry, or None: not this scanner's kind
Scanner = Callable[[str, Path, Path], Model | None]


def checkpoint_entry(name: str, folder: Path, root: Path) -> Model | None:
    """A Diffusers pipeline folder, resolved for each task as a submit would resolve it."""
    if not (folder / MODEL_INDEX).is_file():
        return None
    pipelines: dict[str, str] = {}
    family, errors = None, []
    for task in Task:
        try:
            resolved = resolve(name, task, root)
        except HotpipeError as exc:
            errors.append(exc.message)
            continue
        pipelines[task.value] = resolved.pipeline
        family = resolved.family
    class_name = _class_name(folder / MODEL_INDEX, name)
    return Model(name, "checkpoint", _created(folder), class_name, family, pipelines,
                 None if pipelines else errors[0] if errors else None)


def controlnet_entry(name: str, folder: Path, root: Path) -> Model | None:
    """A ControlNet model folder, with the base family it is made for."""
    if not (folder / MODEL_CONFIG).is_file() or (folder / MODEL_INDEX).is_file():
        return None
    try:
        config = read_index(folder / MODEL_CONFIG, name, "controlnet")
    except HotpipeError:
        return None
    class_name = config.get("_class_name")
    if class_name not in CONTROLNET_MODELS:
        return None
    return Model(name, "controlnet", _created(folder), class_name, controlnet_families(class_name, config)[0])


def lora_entry(name: str, folder: Path, root: Path) -> Model | None:
    """A LoRA folder (``save_lora_weights``' file), with the family its safetensors header says it fits
    (read as a submit's check reads it: the header only, never the tensors)."""
    if (folder / MODEL_INDEX).is_file() or not (folder / LORA_FILE).is_file():
        return None
    try:
        family: str | None = header_shape(folder / LORA_FILE, name, "lora").family
    except HotpipeError as exc:
        return Model(name, "lora", _created(folder), LORA_FILE, None, error=exc.message)
    return Model(name, "lora", _created(folder), LORA_FILE, family)


#: in order: the first that recognises a folder makes its entry
SCANNERS: tuple[Scanner, ...] = (checkpoint_entry, controlnet_entry, lora_entry)


def _class_name(path: Path, name: str) -> str:
    try:
        value = read_index(path, name).get("_class_name")
    except HotpipeError:
        return ""
    return value if isinstance(value, str) else ""


def _created(folder: Path) -> int:
    return int(folder.stat().st_mtime)


def scan(root: Path, scanners: tuple[Scanner, ...] = SCANNERS) -> list[Model]:
    """Every entry under ``root``, sorted by id; hidden folders (``.locks``, ``.cache``) are skipped."""
    root = root.resolve()
    found: list[Model] = []
    if not root.is_dir():
        return found
    for top in _folders(root):
        entry = _entry(top.name, top, root, scanners)
        if entry is not None:
            found.append(entry)
            continue
        for inner in _folders(top):  # org/name
            nested = _entry(f"{top.name}/{inner.name}", inner, root, scanners)
            if nested is not None:
                found.append(nested)
    return sorted(found, key=lambda m: m.id)


def _folders(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]


def _entry(name: str, folder: Path, root: Path, scanners: tuple[Scanner, ...]) -> Model | None:
    if not folder.resolve().is_relative_to(root):  # a symlink out of the root is no model of ours
        return None
    for scanner in scanners:
        entry = scanner(name, folder, root)
        if entry is not None:
            return entry
    return None


@dataclass
class Catalog:
    """The scan of one model root, kept for ``ttl_s`` seconds (0: scanned on every read)."""

    root: Path
    ttl_s: float
    scanners: tuple[Scanner, ...] = SCANNERS
    _models: list[Model] = field(default_factory=list, init=False)
    _scanned_at: float | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def models(self) -> list[Model]:
        with self._lock:
            now = time.monotonic()
            if self._scanned_at is None or now - self._scanned_at >= self.ttl_s:
                self._models = scan(self.root, self.scanners)
                self._scanned_at = now
            return self._models

    def get(self, model_id: str) -> Model | None:
        return next((m for m in self.models() if m.id == model_id), None)

    def page(self, limit: int, after: str | None = None) -> tuple[list[Model], bool]:
        """Up to ``limit`` entries whose ids sort after ``after``, and whether more follow (an id that has
        gone since the previous page still places the next one)."""
        models = self.models()
        start = bisect.bisect_right([m.id for m in models], after) if after is not None else 0
        return models[start:start + limit], start + limit < len(models)
