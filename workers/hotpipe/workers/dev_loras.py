"""Tiny LoRA adapters for the tiny SD and SDXL checkpoints, built offline with PEFT.

Each is a folder holding ``pytorch_lora_weights.safetensors`` in the layout Diffusers'
``save_lora_weights`` writes, so loading one exercises exactly the code a real LoRA goes
through.  The weights are random and non-zero (``init_lora_weights=False``): a LoRA job's
pixels differ from the base checkpoint's, so the tests can tell them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hotpipe.workers.dev_checkpoints import CLIP_WIDTH, sd_unet, sdxl_unet

#: the file Diffusers' ``save_lora_weights`` writes and ``load_lora_weights`` looks for first
LORA_FILE = "pytorch_lora_weights.safetensors"
#: the attention projections the tiny LoRAs adapt (the usual choice for SD LoRAs)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def save_lora(pipeline_class: Any, unet: Any, out: Path, seed: int) -> None:
    """Add a rank-4 LoRA with random weights to ``unet`` and save only the adapter, Diffusers' way."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    pipeline_class.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)


def build_sd_lora(offset: int) -> Callable[[Path, int], None]:
    def build(out: Path, seed: int) -> None:
        from diffusers import StableDiffusionPipeline

        save_lora(StableDiffusionPipeline, sd_unet(), out, seed + offset)
    return build


def build_tiny_lora_sdxl(out: Path, seed: int) -> None:
    from diffusers import StableDiffusionXLPipeline

    save_lora(StableDiffusionXLPipeline, sdxl_unet(time_ids=6, cross_attention_dim=2 * CLIP_WIDTH), out, seed + 3)


#: LoRA folder name -> builder (two for tiny-sd, so tests can switch between resident adapters)
BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "tiny-lora-sd": build_sd_lora(1),
    "tiny-lora-sd-b": build_sd_lora(2),
    "tiny-lora-sdxl": build_tiny_lora_sdxl,
}
