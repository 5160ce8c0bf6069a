"""Find a checkpoint's ``model_index.json`` — local folder or Hub repo — and resolve it.

Only ``model_index.json`` is ever read to route a job; weights are the worker's
business.  Local checkpoints are folder names under the model root: anything that
would land outside it (``..``, absolute paths, symlinks pointing out) is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from hotpipe.shared.errors import InvalidRequest, Unavailable
from hotpipe.shared.families import CONNECTED_PRIORS, UnsupportedPipeline, base_family, needs_prior
from hotpipe.shared.job import Task
from hotpipe.shared.variants import CONTROLNET_MODELS, variant_class

MODEL_INDEX = "model_index.json"
#: a single model's config (a ControlNet checkpoint is one model, not a pipeline)
MODEL_CONFIG = "config.json"
#: the model card, whose YAML header names a decoder's connected prior (``prior: [repo id]``)
MODEL_CARD = "README.md"
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
    controlnet: ResolvedControlNet | None = None
    prior: ResolvedPrior | None = None  # a decoder's connected prior, named by its model card

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ResolvedPrior:
    """The prior pipeline a decoder's combined pipeline runs first (Kandinsky, Wuerstchen, Cascade)."""

    checkpoint: str
    source: Literal["local", "hub"]
    location: str
    revision: str | None
    class_name: str


@dataclass(frozen=True)
class ResolvedControlNet:
    """A ControlNet checkpoint: one model whose ``config.json`` names a ControlNet class."""

    checkpoint: str
    source: Literal["local", "hub"]
    location: str
    revision: str | None
    class_name: str  # ControlNetModel, ControlNetUnionModel, ...
    kind: str  # "controlnet" or "controlnet-union"


class CheckpointNotFound(InvalidRequest):
    code = "checkpoint_not_found"


class InvalidCheckpoint(InvalidRequest):
    code = "invalid_checkpoint"


#: (repo id, file name, revision or None, field to blame) -> (the file's JSON object, commit hash)
HubFetch = Callable[[str, str, str | None, str], tuple[dict[str, Any], str | None]]


@dataclass(frozen=True)
class _Config:
    """One config file read to route a job: where it came from and what it says."""

    source: Literal["local", "hub"]
    location: str
    revision: str | None
    data: dict[str, Any]


def resolve(checkpoint: str, task: Task, model_root: Path, revision: str | None = None, *,
            controlnet: str | None = None, enable_pag: bool | None = None,
            hub: HubFetch | None = None) -> Resolved:
    """Resolve ``checkpoint`` for ``task`` (with a ControlNet checkpoint and PAG on/off, when asked);
    raises a 4xx error the caller can act on.  ``hub`` fetches Hub files (default: the Hub cache)."""
    fetch = hub or fetch_hub_file
    index = read_config(checkpoint, model_root, revision, MODEL_INDEX, "checkpoint", fetch)
    class_name = index.data.get("_class_name")
    if not isinstance(class_name, str):
        raise InvalidCheckpoint(f"{MODEL_INDEX} of '{checkpoint}' has no _class_name", field="checkpoint")
    cn, cn_config = resolve_controlnet(controlnet, model_root, fetch) if controlnet is not None else (None, {})
    family, pipeline = variant_class(class_name, task, cn.kind if cn else None, enable_pag)
    check_config_limits(index.data, checkpoint, task)
    prior = resolve_prior(checkpoint, index, class_name, family, model_root, fetch) if needs_prior(class_name) else None
    resolved = Resolved(checkpoint, index.source, index.location, index.revision, class_name, family, pipeline,
                        base_family(family), cn, prior)
    if cn is not None:
        check_controlnet_fits(resolved, cn, cn_config)
    return resolved


def read_config(checkpoint: str, model_root: Path, revision: str | None, filename: str, field: str,
                fetch: HubFetch) -> _Config:
    """The JSON file ``filename`` of a local folder or a Hub repo (only that file is fetched)."""
    folder = local_folder(checkpoint, model_root, filename, field)
    if folder is not None:
        if revision is not None:
            raise InvalidRequest(f"revision applies to Hub checkpoints only; '{checkpoint}' is a local folder",
                                 field="revision")
        return _Config("local", str(folder), None, read_index(folder / filename, checkpoint, field))
    if HUB_REPO_RE.match(checkpoint):
        data, commit = fetch(checkpoint, filename, revision, field)
        return _Config("hub", checkpoint, commit, data)
    raise CheckpointNotFound(
        f"{field} '{checkpoint}' is neither a folder under the model root nor a Hub repo id "
        "(namespace/name)", field=field)


def resolve_prior(checkpoint: str, index: _Config, class_name: str, family: str, model_root: Path,
                  fetch: HubFetch) -> ResolvedPrior:
    """The prior a decoder checkpoint's model card names, as AutoPipeline's connected pipeline: a Hub repo
    id (as on the Hub) or a folder under the model root; it must be the family's prior pipeline."""
    if index.source == "local":
        card = read_model_card(Path(index.location) / MODEL_CARD)
    else:
        card, _ = fetch(index.location, MODEL_CARD, index.revision, "checkpoint")
    names = card.get("prior")
    names = [names] if isinstance(names, str) else names
    expected = CONNECTED_PRIORS[family]
    if not (isinstance(names, list) and names and isinstance(names[0], str)):
        raise InvalidCheckpoint(
            f"checkpoint '{checkpoint}' is a {class_name} (a decoder): its model card ({MODEL_CARD}) must name "
            f"its prior, a {expected} checkpoint, in its YAML header as 'prior: [<Hub repo id or folder>]'",
            field="checkpoint")
    prior = read_config(names[0], model_root, None, MODEL_INDEX, "checkpoint", fetch)
    if prior.data.get("_class_name") != expected:
        raise InvalidCheckpoint(
            f"the prior '{names[0]}' named by the model card of '{checkpoint}' is a "
            f"{prior.data.get('_class_name')}, not a {expected}", field="checkpoint")
    return ResolvedPrior(names[0], prior.source, prior.location, prior.revision, expected)


def read_model_card(path: Path) -> dict[str, Any]:
    """The YAML header of a model card as a dict (empty when there is no card or no header)."""
    import yaml
    from huggingface_hub.repocard import metadata_load  # imported late: keeps the API's start fast

    try:
        return dict(metadata_load(path) or {}) if path.is_file() else {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InvalidCheckpoint(f"{path.name} of '{path.parent.name}' has an unreadable header: {exc}",
                                field="checkpoint") from exc


def resolve_controlnet(controlnet: str, model_root: Path,
                       fetch: HubFetch) -> tuple[ResolvedControlNet, dict[str, Any]]:
    """A ControlNet checkpoint and its config: its ``config.json`` must name a ControlNet model class."""
    folder = local_folder(controlnet, model_root, None, "controlnet")
    if folder is not None and not (folder / MODEL_CONFIG).is_file() and (folder / MODEL_INDEX).is_file():
        pipeline = read_index(folder / MODEL_INDEX, controlnet, "controlnet").get("_class_name")
        raise InvalidCheckpoint(
            f"controlnet '{controlnet}' is a Diffusers pipeline ({pipeline}), not a ControlNet model; name a "
            f"ControlNet checkpoint (a folder with {MODEL_CONFIG} whose _class_name is one of "
            f"{', '.join(CONTROLNET_MODELS)})", field="controlnet")
    config = read_config(controlnet, model_root, None, MODEL_CONFIG, "controlnet", fetch)
    class_name = config.data.get("_class_name")
    if class_name not in CONTROLNET_MODELS:
        raise InvalidCheckpoint(
            f"controlnet '{controlnet}' is a {class_name or 'model without _class_name'}, not a ControlNet; its "
            f"{MODEL_CONFIG} must name one of {', '.join(CONTROLNET_MODELS)}", field="controlnet")
    kind = CONTROLNET_MODELS[class_name][0]
    cn = ResolvedControlNet(controlnet, config.source, config.location, config.revision, class_name, kind)
    return cn, config.data


def check_controlnet_fits(resolved: Resolved, cn: ResolvedControlNet, config: dict[str, Any]) -> None:
    """The ControlNet model must be made for the checkpoint's family: its class (``CONTROLNET_MODELS``),
    and for SD vs SDXL, which share ``ControlNetModel``, SDXL's added ``text_time`` conditioning."""
    made_for = controlnet_families(cn.class_name, config)
    if resolved.base_family not in made_for:
        raise InvalidCheckpoint(
            f"controlnet '{cn.checkpoint}' is a {cn.class_name} made for {' or '.join(made_for)}, but checkpoint "
            f"'{resolved.checkpoint}' is {resolved.base_family}; use a ControlNet trained for "
            f"{resolved.base_family}", field="controlnet")


def controlnet_families(class_name: str, config: dict[str, Any]) -> tuple[str, ...]:
    """The base families a ControlNet model (its class and ``config.json``) is made for."""
    if class_name == "ControlNetModel":
        return ("stable-diffusion-xl",) if config.get("addition_embed_type") == "text_time" else ("stable-diffusion",)
    return CONTROLNET_MODELS[class_name][1]


def check_config_limits(index: dict[str, Any], checkpoint: str, task: Task) -> None:
    """Refuse a task the checkpoint's own settings rule out (see ``TASKS_WHEN_SET``)."""
    for setting, (kind, tasks) in TASKS_WHEN_SET.items():
        if index.get(setting) is True and task not in tasks:
            names = " and ".join(sorted(t.value for t in tasks))
            raise UnsupportedPipeline(f"checkpoint '{checkpoint}' sets {setting} in {MODEL_INDEX} ({kind}): "
                                      f"it runs {names} only, not {task.value}", field="checkpoint")


def local_folder(checkpoint: str, model_root: Path, marker: str | None = MODEL_INDEX,
                 field: str = "checkpoint") -> Path | None:
    """The checkpoint's folder under ``model_root`` if it exists there; refuses escapes, and a folder
    without ``marker`` (the file that says what the folder is)."""
    check_local_name(checkpoint, field)
    root = model_root.resolve()
    candidate = root / checkpoint
    if not (candidate.exists() or candidate.is_symlink()):
        return None
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop: RuntimeError before Python 3.13, OSError after
        raise InvalidCheckpoint(f"{field} '{checkpoint}' is a symlink that can't be resolved (a loop?)",
                                field=field) from exc
    if not real.is_relative_to(root):
        raise InvalidCheckpoint(f"{field} '{checkpoint}' resolves outside the model root; "
                                "name a folder inside it", field=field)
    if marker is not None and not (real / marker).is_file():
        what = "a Diffusers pipeline" if marker == MODEL_INDEX else "a Diffusers model"
        raise InvalidCheckpoint(f"{field} folder '{checkpoint}' has no {marker}; is it {what} saved with "
                                "save_pretrained?", field=field)
    return real


def check_local_name(checkpoint: str, field: str = "checkpoint") -> None:
    """Refuse names that could point outside the model root, however they are spelled."""
    bad = ("\x00" in checkpoint or "\\" in checkpoint or checkpoint.startswith(("/", "~"))
           or re.match(r"^[A-Za-z]:", checkpoint) is not None or "%" in checkpoint)
    # split, not PurePosixPath(...).parts: that drops '.' components, so './x' would slip through
    parts = checkpoint.split("/")
    if bad or any(p in ("..", ".") for p in parts) or checkpoint != checkpoint.strip() or not checkpoint:
        raise InvalidCheckpoint(
            f"{field} {checkpoint!r} is not allowed: give a folder name under the model root or a Hub "
            "repo id, without '..', absolute paths, backslashes or percent-escapes", field=field)


def read_index(path: Path, checkpoint: str, field: str = "checkpoint") -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidCheckpoint(f"{path.name} of '{checkpoint}' is unreadable: {exc}", field=field) from exc
    if not isinstance(data, dict):
        raise InvalidCheckpoint(f"{path.name} of '{checkpoint}' is not a JSON object", field=field)
    return data


def fetch_hub_file(repo_id: str, filename: str, revision: str | None, field: str) -> tuple[dict[str, Any], str | None]:
    """Fetch only ``filename`` (honours ``HF_HUB_OFFLINE`` and the Hub cache); returns its JSON and commit."""
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download  # imported late: keeps the API's start fast

    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision))
    except hub_errors.LocalEntryNotFoundError as exc:
        raise CheckpointNotFound(
            f"Hub repo '{repo_id}' ({field}) is not in the local Hub cache and the Hub can't be reached "
            "(HF_HUB_OFFLINE or no network); download it first or name a local folder",
            field=field) from exc
    except hub_errors.RevisionNotFoundError as exc:
        raise CheckpointNotFound(f"revision '{revision}' not found in Hub repo '{repo_id}'", field="revision") from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise CheckpointNotFound(f"Hub repo '{repo_id}' not found (or it is private)", field=field) from exc
    except (hub_errors.EntryNotFoundError, hub_errors.RemoteEntryNotFoundError) as exc:
        what = "not a Diffusers pipeline" if filename == MODEL_INDEX else "not a Diffusers model"
        raise InvalidCheckpoint(f"Hub repo '{repo_id}' has no {filename}: {what}", field=field) from exc
    except (OSError, hub_errors.HfHubHTTPError) as exc:
        raise Unavailable(f"the Hugging Face Hub could not be reached: {exc}") from exc
    commit = path.parent.name if COMMIT_RE.match(path.parent.name) else revision
    return (read_model_card(path) if filename == MODEL_CARD else read_index(path, repo_id, field)), commit
