"""Build tiny random-weight Diffusers checkpoints offline, for tests and the demo.

Nothing is downloaded: the models are built from small configs (the shapes Diffusers'
own tests use) and the CLIP tokenizer from a hand-written byte-level vocabulary.  Each
checkpoint is written with ``save_pretrained`` as safetensors, so loading it exercises
exactly the code a real checkpoint goes through.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

#: checkpoint folder name -> builder
BUILDERS: dict[str, Callable[[Path, int], None]] = {}


def _builder(name: str) -> Callable[[Callable[[Path, int], None]], Callable[[Path, int], None]]:
    def register(fn: Callable[[Path, int], None]) -> Callable[[Path, int], None]:
        BUILDERS[name] = fn
        return fn
    return register


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer over single bytes (514 tokens) with ``model_max_length=77``."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tok = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                        model_max_length=77)
    tok.save_pretrained(folder)


@_builder("tiny-sd")
def build_tiny_sd(out: Path, seed: int) -> None:
    """A stable-diffusion checkpoint (StableDiffusionPipeline) of about 0.5 MB."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=514,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    tok_dir = out / "tokenizer"
    write_clip_tokenizer(tok_dir)
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(tok_dir),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)  # type: ignore[attr-defined]


def make_checkpoints(root: Path, names: list[str] | None = None, seed: int = 0, force: bool = False) -> list[Path]:
    """Build the named (default: all) tiny checkpoints under ``root``; existing ones are kept."""
    built = []
    for name in names or list(BUILDERS):
        out = root / name
        if force or not (out / "model_index.json").is_file():
            BUILDERS[name](out, seed)
        built.append(out)
    return built
