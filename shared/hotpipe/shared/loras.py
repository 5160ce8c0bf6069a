"""LoRA adapters a job asks for, resolved and checked at submit without torch.

A LoRA is named like a checkpoint: a folder under the model root or a Hub repo id, holding
``pytorch_lora_weights.safetensors`` (Diffusers' ``save_lora_weights`` layout) or the file
``weight_name`` names.  Only safetensors files are accepted, so a worker never unpickles what a
caller sent.  Whether it fits the checkpoint is read from the safetensors header alone (8 bytes of
length, then JSON: every tensor's name, dtype and shape): the width its cross-attention projections
take must be the checkpoint UNet's ``cross_attention_dim``, a LoRA with layers for a second text
encoder or for stacked transformer blocks is an SDXL one, and the other way round.  A Hub LoRA's
header is range-read from the Hub at a pinned commit (``hub_loras``), never downloaded whole here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hotpipe.shared.checkpoints import HUB_REPO_RE, HubFetch, Resolved, local_folder, read_config
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.hub_loras import LORA_FILE, HubLoras
from hotpipe.shared.job import LoraRequest
from hotpipe.shared.safetensors_header import read_header
from hotpipe.shared.safety import CheckpointNotAllowed, checkpoint_allowed
from hotpipe.shared.spec import LoraSpec

#: base families whose pipelines load LoRAs through Diffusers (ControlNet and PAG variants included)
LORA_FAMILIES = ("stable-diffusion", "stable-diffusion-xl")
CROSS_ATTN_DOWN = re.compile(r"attn2[._]to_k[._](?:lora[._]down|lora_A)[._]weight$")
STACKED_BLOCK = re.compile(r"transformer_blocks[._]([1-9]\d*)[._]")
SECOND_ENCODER = ("text_encoder_2.", "lora_te2_")


@dataclass(frozen=True)
class LoraShape:
    """What a LoRA's header says about the model it was made for."""

    cross_attention_dim: int | None
    stacked_blocks: bool
    second_encoder: bool

    @property
    def family(self) -> str:
        return "stable-diffusion-xl" if self.stacked_blocks or self.second_encoder else "stable-diffusion"


def resolve_loras(loras: list[LoraRequest], resolved: Resolved, model_root: Path, allowlist: tuple[str, ...],
                  fetch: HubFetch, max_loras: int, hub: HubLoras | None = None) -> list[LoraSpec]:
    """Every LoRA of a request, resolved and checked against the checkpoint; raises a 4xx naming the field
    (a 503 when a Hub LoRA can't be checked because the Hub is down).  ``hub`` reads Hub LoRAs' headers
    (default: uncached)."""
    if len(loras) > max_loras:
        raise InvalidRequest(f"loras has {len(loras)} adapters; this server applies at most {max_loras} per job",
                             field="loras")
    if resolved.base_family not in LORA_FAMILIES:
        raise InvalidRequest(f"loras are supported on {' and '.join(LORA_FAMILIES)} checkpoints; "
                             f"'{resolved.checkpoint}' is {resolved.family} ({resolved.pipeline}): remove loras",
                             field="loras")
    names = [lora.name for lora in loras]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidRequest(f"loras.{i}.name '{name}' is listed twice; give each adapter once with its scale",
                                 field=f"loras.{i}.name")
    unet = read_config(resolved.checkpoint, model_root, resolved.revision if resolved.source == "hub" else None,
                       "unet/config.json", "checkpoint", fetch).data
    hub = hub or HubLoras(ttl_s=0)
    return [resolve_lora(i, lora, resolved, unet, model_root, allowlist, hub) for i, lora in enumerate(loras)]


@dataclass(frozen=True)
class Found:
    """Where a LoRA's file is and what its header says."""

    source: Literal["local", "hub"]
    location: str  # the absolute folder, or the Hub repo id
    revision: str | None  # the commit a Hub LoRA was read at
    header: dict[str, Any]


def resolve_lora(i: int, lora: LoraRequest, resolved: Resolved, unet: dict[str, Any], model_root: Path,
                 allowlist: tuple[str, ...], hub: HubLoras) -> LoraSpec:
    field = f"loras.{i}"
    if not checkpoint_allowed(lora.name, allowlist):
        raise CheckpointNotAllowed(f"{field}.name {lora.name!r} is not on this server's checkpoint allowlist; "
                                   "ask the operator", field=f"{field}.name")
    weight_name = lora.weight_name or LORA_FILE
    if not weight_name.endswith(".safetensors") or "/" in weight_name or weight_name.startswith("."):
        raise InvalidRequest(f"{field}.weight_name {weight_name!r}: only a .safetensors file in the LoRA's folder "
                             "is loaded (pickle .bin weights never are); convert it to safetensors",
                             field=f"{field}.weight_name")
    found = locate(lora.name, weight_name, model_root, field, hub)
    check_fits(shape_of(found.header, lora.name, weight_name, field), resolved, unet, lora.name, field)
    pinned = f"|{found.revision}" if found.revision else ""  # a Hub LoRA's new commit is a new adapter
    identity = f"{found.source}|{found.location}|{weight_name}{pinned}"
    adapter = "lora_" + hashlib.sha256(identity.encode()).hexdigest()[:16]
    return LoraSpec(name=lora.name, scale=lora.scale, weight_name=weight_name, source=found.source,
                    location=found.location, revision=found.revision, adapter=adapter)


def locate(name: str, weight_name: str, model_root: Path, field: str, hub: HubLoras) -> Found:
    """A local folder's file, or a Hub repo's (its header range-read from the Hub, or its cache)."""
    folder = local_folder(name, model_root, marker=None, field=f"{field}.name")
    if folder is not None:
        path = folder / weight_name
        if not path.is_file():
            pickled = sorted(p.name for p in folder.glob("*.bin"))
            hint = (f"; it holds {', '.join(pickled)}: pickle weights are never loaded, convert them to "
                    "safetensors") if pickled else "; set weight_name to the .safetensors file in it"
            raise InvalidRequest(f"{field}.name folder '{name}' has no {weight_name}{hint}", field=f"{field}.name")
        return Found("local", str(folder), None, read_header(path, name, field))
    if HUB_REPO_RE.match(name):
        commit, header = hub.header(name, weight_name, field)
        return Found("hub", name, commit, header)
    raise InvalidRequest(f"{field}.name '{name}' is neither a folder under the model root nor a Hub repo id "
                         "(namespace/name)", field=f"{field}.name")


def header_shape(path: Path, name: str, field: str) -> LoraShape:
    """Read the safetensors header (never the tensors) and what it says about the model the LoRA is for."""
    return shape_of(read_header(path, name, field), name, path.name, field)


def shape_of(header: dict[str, Any], name: str, filename: str, field: str) -> LoraShape:
    """What a safetensors header's tensor names and shapes say about the model the LoRA is for."""
    keys = [k for k in header if k != "__metadata__"]
    if not any("lora" in k for k in keys):
        raise InvalidRequest(f"{field}.name '{name}': {filename} holds no LoRA layers", field=f"{field}.name")
    widths = {int(header[k]["shape"][1]) for k in keys if CROSS_ATTN_DOWN.search(k) and len(header[k]["shape"]) == 2}
    return LoraShape(cross_attention_dim=max(widths) if widths else None,
                     stacked_blocks=any(STACKED_BLOCK.search(k) for k in keys),
                     second_encoder=any(k.startswith(SECOND_ENCODER) for k in keys))


def check_fits(shape: LoraShape, resolved: Resolved, unet: dict[str, Any], name: str, field: str) -> None:
    """The LoRA was made for the checkpoint's family and widths, or a 422 naming both families."""
    width = unet.get("cross_attention_dim")
    wrong_width = isinstance(width, int) and shape.cross_attention_dim not in (None, width)
    if wrong_width or shape.family != resolved.base_family:
        made_for = f"{shape.family}" + (f", cross-attention {shape.cross_attention_dim} wide"
                                        if shape.cross_attention_dim else "")
        raise InvalidRequest(f"{field}.name '{name}' is a LoRA for {made_for}, but checkpoint '{resolved.checkpoint}' "
                             f"is {resolved.base_family} (cross-attention {width} wide); use a LoRA made for "
                             f"{resolved.base_family}", field=f"{field}.name")
