"""Find a checkpoint's ``model_index.json`` — local folder or Hub repo — and resolve it.

Only ``model_index.json`` is ever read to route a job; weights are the worker's
business.  Local checkpoints are folder names under the model root: anything that
would land outside it (``..``, absolute paths, symlinks pointing out) is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from hotpipe.shared.errors import InvalidRequest, Unavailable
from hotpipe.shared.families import UnsupportedPipeline, base_family, task_class
from hotpipe.shared.job import Task

MODEL_INDEX = "model_index.json"
# huggingface_hub's repo id rule: namespace/name, letters, digits, '-', '_', '.'
HUB_REPO_RE = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.\-]{0,95}/[A-Za-z0-9][\w.\-]{0,95}(?<![.-])$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")

#: model_index.json settings that limit a checkpoint to some of its family's tasks:
#: setting -> (what such a checkpoint is, the tasks it runs).  An SDXL refiner's UNet is
#: conditioned on an aesthetic score, which only the image2image and inpainting pipelines
#: pass (text2image would fail at the first step).
TASKS_WHEN_SET: dict[str, tuple[str, frozenset[Task]]] = {
    "requires_aesthetics_score": ("an SDXL refiner", frozenset({Task.IMAGE2IMAGE, Task.INPAINTING})),
}


@dataclass(frozen=True)
class Resolved:
    """Where a checkpoint lives and which pipeline runs the task on it."""

    checkpoint: str
    source: Literal["local", "hub"]
    location: str  # absolute folder for local checkpoints, repo id for Hub ones
    revision: str | None  # the commit hash for Hub checkpoints
    class_name: str
    family: str  # the family key in Diffusers' tables (or hotpipe's), variants included
    pipeline: str
    base_family: str  # the family whose queue and workers run it (a variant's base)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CheckpointNotFound(InvalidRequest):
    code = "checkpoint_not_found"


class InvalidCheckpoint(InvalidRequest):
    code = "invalid_checkpoint"


def resolve(checkpoint: str, task: Task, model_root: Path, revision: str | None = None) -> Resolved:
    """Resolve ``checkpoint`` for ``task``; raises a 4xx error the caller can act on."""
    folder = local_folder(checkpoint, model_root)
    if folder is not None:
        if revision is not None:
            raise InvalidRequest(f"revision applies to Hub checkpoints only; '{checkpoint}' is a local folder",
                                 field="revision")
        index, location, commit = read_index(folder / MODEL_INDEX, checkpoint), str(folder), None
        source: Literal["local", "hub"] = "local"
    elif HUB_REPO_RE.match(checkpoint):
        path = hub_model_index(checkpoint, revision)
        index, location, source = read_index(path, checkpoint), checkpoint, "hub"
        commit = path.parent.name if COMMIT_RE.match(path.parent.name) else revision
    else:
        raise CheckpointNotFound(
            f"checkpoint '{checkpoint}' is neither a folder under the model root nor a Hub repo id "
            "(namespace/name)", field="checkpoint")
    class_name = index.get("_class_name")
    if not isinstance(class_name, str):
        raise InvalidCheckpoint(f"{MODEL_INDEX} of '{checkpoint}' has no _class_name", field="checkpoint")
    family, pipeline = task_class(class_name, task)
    check_config_limits(index, checkpoint, task)
    return Resolved(checkpoint, source, location, commit, class_name, family, pipeline, base_family(family))


def check_config_limits(index: dict[str, Any], checkpoint: str, task: Task) -> None:
    """Refuse a task the checkpoint's own settings rule out (see ``TASKS_WHEN_SET``)."""
    for setting, (kind, tasks) in TASKS_WHEN_SET.items():
        if index.get(setting) is True and task not in tasks:
            names = " and ".join(sorted(t.value for t in tasks))
            raise UnsupportedPipeline(f"checkpoint '{checkpoint}' sets {setting} in {MODEL_INDEX} ({kind}): "
                                      f"it runs {names} only, not {task.value}", field="checkpoint")


def local_folder(checkpoint: str, model_root: Path) -> Path | None:
    """The checkpoint's folder under ``model_root`` if it exists there; refuses escapes."""
    check_local_name(checkpoint)
    root = model_root.resolve()
    candidate = root / checkpoint
    if not (candidate.exists() or candidate.is_symlink()):
        return None
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop: RuntimeError before Python 3.13, OSError after
        raise InvalidCheckpoint(f"checkpoint '{checkpoint}' is a symlink that can't be resolved (a loop?)",
                                field="checkpoint") from exc
    if not real.is_relative_to(root):
        raise InvalidCheckpoint(f"checkpoint '{checkpoint}' resolves outside the model root; "
                                "name a folder inside it", field="checkpoint")
    if not (real / MODEL_INDEX).is_file():
        raise InvalidCheckpoint(f"checkpoint folder '{checkpoint}' has no {MODEL_INDEX}; is it a Diffusers "
                                "pipeline saved with save_pretrained?", field="checkpoint")
    return real


def check_local_name(checkpoint: str) -> None:
    """Refuse names that could point outside the model root, however they are spelled."""
    bad = ("\x00" in checkpoint or "\\" in checkpoint or checkpoint.startswith(("/", "~"))
           or re.match(r"^[A-Za-z]:", checkpoint) is not None or "%" in checkpoint)
    # split, not PurePosixPath(...).parts: that drops '.' components, so './x' would slip through
    parts = checkpoint.split("/")
    if bad or any(p in ("..", ".") for p in parts) or checkpoint != checkpoint.strip() or not checkpoint:
        raise InvalidCheckpoint(
            f"checkpoint {checkpoint!r} is not allowed: give a folder name under the model root or a Hub "
            "repo id, without '..', absolute paths, backslashes or percent-escapes", field="checkpoint")


def read_index(path: Path, checkpoint: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidCheckpoint(f"{MODEL_INDEX} of '{checkpoint}' is unreadable: {exc}", field="checkpoint") from exc
    if not isinstance(data, dict):
        raise InvalidCheckpoint(f"{MODEL_INDEX} of '{checkpoint}' is not a JSON object", field="checkpoint")
    return data


def hub_model_index(repo_id: str, revision: str | None) -> Path:
    """Fetch only ``model_index.json`` (honours ``HF_HUB_OFFLINE`` and the Hub cache)."""
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download  # imported late: keeps the API's start fast

    try:
        return Path(hf_hub_download(repo_id, MODEL_INDEX, revision=revision))
    except hub_errors.LocalEntryNotFoundError as exc:
        raise CheckpointNotFound(
            f"Hub repo '{repo_id}' is not in the local Hub cache and the Hub can't be reached "
            "(HF_HUB_OFFLINE or no network); download it first or name a local folder",
            field="checkpoint") from exc
    except hub_errors.RevisionNotFoundError as exc:
        raise CheckpointNotFound(f"revision '{revision}' not found in Hub repo '{repo_id}'", field="revision") from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise CheckpointNotFound(f"Hub repo '{repo_id}' not found (or it is private)", field="checkpoint") from exc
    except (hub_errors.EntryNotFoundError, hub_errors.RemoteEntryNotFoundError) as exc:
        raise InvalidCheckpoint(f"Hub repo '{repo_id}' has no {MODEL_INDEX}: not a Diffusers pipeline",
                                field="checkpoint") from exc
    except (OSError, hub_errors.HfHubHTTPError) as exc:
        raise Unavailable(f"the Hugging Face Hub could not be reached: {exc}") from exc
