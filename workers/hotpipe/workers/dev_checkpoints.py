"""Build tiny random-weight Diffusers checkpoints offline, for tests and the demo.

Nothing is downloaded: the models are built from small configs (the shapes Diffusers'
own fast tests use, shrunk further) and the tokenizers from hand-written vocabularies —
CLIP's byte-level BPE and T5's Unigram.  Each checkpoint is written with
``save_pretrained`` as safetensors, so loading it exercises exactly the code a real
checkpoint goes through.  Every builder takes well under a second once torch is imported.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: checkpoint folder name -> builder
BUILDERS: dict[str, Callable[[Path, int], None]] = {}

#: the tiny CLIP text encoders' width; SDXL's UNet attends to two of them side by side
CLIP_WIDTH = 32
#: the tiny T5 encoder's width (PixArt's ``caption_channels``, Chroma's ``joint_attention_dim``)
T5_WIDTH = 32


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


def write_clip_tokenizer(folder: Path) -> Any:
    """A CLIP tokenizer over single bytes (514 tokens) with ``model_max_length=77``; returns it loaded."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tok = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                        model_max_length=77)
    tok.save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder)


def t5_tokenizer() -> Any:
    """A T5 (Unigram) tokenizer over printable ASCII, with and without the word-start mark.

    transformers 5's ``T5Tokenizer`` is backed by ``tokenizers`` and takes the Unigram
    vocabulary as (piece, log-probability) pairs, so no SentencePiece model file is needed.
    Ids 0, 1, 2 are ``<pad>``, ``</s>``, ``<unk>`` as in real T5 checkpoints.
    """
    from transformers import T5Tokenizer

    chars = [c for c in string.printable if not c.isspace()]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + c, -2.5) for c in chars] + [(c, -3.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def t5_encoder(vocab_size: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=T5_WIDTH, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
    ))


def clip_text_encoder(with_projection: bool = False) -> Any:
    """A 2-layer CLIP text encoder over the byte vocabulary of :func:`write_clip_tokenizer`."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=CLIP_WIDTH, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=514, projection_dim=CLIP_WIDTH,
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def vae(levels: int = 2, latent_channels: int = 4, **config: Any) -> Any:
    """An AutoencoderKL that downsamples by ``2 ** (levels - 1)``."""
    from diffusers import AutoencoderKL

    channels = [4] + [8] * (levels - 1)
    return AutoencoderKL(
        block_out_channels=channels, in_channels=3, out_channels=3, latent_channels=latent_channels,
        norm_num_groups=2, down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels, **config,
    )


def save(pipe: Any, out: Path) -> None:
    pipe.save_pretrained(out, safe_serialization=True)


def sd_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CLIP_WIDTH, norm_num_groups=2,
    )


@_builder("tiny-sd")
def build_tiny_sd(out: Path, seed: int) -> None:
    """A stable-diffusion checkpoint (StableDiffusionPipeline) of about 0.5 MB."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    unet = sd_unet()
    autoencoder, text_encoder = vae(), clip_text_encoder()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    save(StableDiffusionPipeline(
        unet=unet, vae=autoencoder, text_encoder=text_encoder, tokenizer=write_clip_tokenizer(out / "tokenizer"),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ), out)


def sdxl_unet(time_ids: int, cross_attention_dim: int) -> Any:
    """SDXL's UNet: ``text_time`` added conditioning over ``time_ids`` micro-conditions (6, or 5 for a refiner)."""
    from diffusers import UNet2DConditionModel

    time_embed_dim = 8
    return UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=2, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=time_ids * time_embed_dim + CLIP_WIDTH,
        cross_attention_dim=cross_attention_dim,
    )


def sdxl_scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  steps_offset=1, timestep_spacing="leading")


@_builder("tiny-sdxl")
def build_tiny_sdxl(out: Path, seed: int) -> None:
    """A stable-diffusion-xl base checkpoint: two CLIP text encoders, the second with a projection."""
    from diffusers import StableDiffusionXLPipeline

    torch.manual_seed(seed)
    unet = sdxl_unet(time_ids=6, cross_attention_dim=2 * CLIP_WIDTH)
    autoencoder, text_encoder, text_encoder_2 = vae(), clip_text_encoder(), clip_text_encoder(with_projection=True)
    save(StableDiffusionXLPipeline(
        unet=unet, vae=autoencoder, scheduler=sdxl_scheduler(),
        text_encoder=text_encoder, tokenizer=write_clip_tokenizer(out / "tokenizer"),
        text_encoder_2=text_encoder_2, tokenizer_2=write_clip_tokenizer(out / "tokenizer_2"),
    ), out)


@_builder("tiny-sdxl-refiner")
def build_tiny_sdxl_refiner(out: Path, seed: int) -> None:
    """An SDXL refiner: saved as StableDiffusionXLImg2ImgPipeline, second text encoder only, and a UNet
    conditioned on an aesthetic score (5 micro-conditions), like stabilityai/stable-diffusion-xl-refiner-1.0."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    torch.manual_seed(seed)
    unet = sdxl_unet(time_ids=5, cross_attention_dim=CLIP_WIDTH)
    autoencoder, text_encoder_2 = vae(), clip_text_encoder(with_projection=True)
    save(StableDiffusionXLImg2ImgPipeline(
        unet=unet, vae=autoencoder, scheduler=sdxl_scheduler(), text_encoder=None, tokenizer=None,
        text_encoder_2=text_encoder_2, tokenizer_2=write_clip_tokenizer(out / "tokenizer_2"),
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
    ), out)


def save_controlnet(unet: Any, out: Path) -> None:
    """A ControlNetModel shaped like ``unet`` (``from_unet``, as ControlNets are trained), on its own.

    Its conditioning embedding downsamples the control image once, like the tiny VAE
    (``vae()``: a factor of 2), so the control features meet the latents at their size.
    """
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32),
                                           load_weights_from_unet=False)
    controlnet.save_pretrained(out, safe_serialization=True)


@_builder("tiny-controlnet-sd")
def build_tiny_controlnet_sd(out: Path, seed: int) -> None:
    """A ControlNet checkpoint (one ``ControlNetModel``: ``config.json`` + weights) for ``tiny-sd``."""
    torch.manual_seed(seed + 1)
    save_controlnet(sd_unet(), out)


@_builder("tiny-controlnet-sdxl")
def build_tiny_controlnet_sdxl(out: Path, seed: int) -> None:
    """A ControlNet checkpoint for ``tiny-sdxl``: SDXL's ``text_time`` added conditioning, which is what
    tells an SDXL ControlNet from an SD one (both are ``ControlNetModel``)."""
    torch.manual_seed(seed + 1)
    save_controlnet(sdxl_unet(time_ids=6, cross_attention_dim=2 * CLIP_WIDTH), out)


@_builder("tiny-pixart-sigma")
def build_tiny_pixart_sigma(out: Path, seed: int) -> None:
    """A pixart-sigma checkpoint: T5 encoder + tokenizer, a PixArt transformer, an 8x VAE.

    ``sample_size=32`` selects PixArt's 256-pixel aspect-ratio bins, so like a real PixArt-Σ
    it renders at the nearest bin and resizes to the requested size.
    """
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=32, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=T5_WIDTH, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6,
    )
    tokenizer = t5_tokenizer()
    save(PixArtSigmaPipeline(
        transformer=transformer, vae=vae(levels=4), text_encoder=t5_encoder(len(tokenizer)), tokenizer=tokenizer,
        scheduler=DPMSolverMultistepScheduler(),
    ), out)


@_builder("tiny-chroma")
def build_tiny_chroma(out: Path, seed: int) -> None:
    """A chroma checkpoint (ChromaPipeline): T5 + Chroma transformer; its image2image and inpainting
    pipelines exist in Diffusers but AutoPipeline can't reach them (see ``shared/hotpipe/shared/beyond_auto.py``)."""
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    latent_channels = 4
    transformer: Any = ChromaTransformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=T5_WIDTH, axes_dims_rope=[4, 4, 8], approximator_hidden_dim=32,
        approximator_layers=1, approximator_num_channels=16,
    )
    # Real Chroma checkpoints (lodestones/Chroma1-HD) keep Flux's ``guidance_embeds: false`` in the
    # transformer's config, which ChromaInpaintPipeline reads (diffusers#12112 shows the config).
    transformer.register_to_config(guidance_embeds=False)
    tokenizer = t5_tokenizer()
    save(ChromaPipeline(
        transformer=transformer, text_encoder=t5_encoder(len(tokenizer)),
        tokenizer=tokenizer, scheduler=FlowMatchEulerDiscreteScheduler(), image_encoder=None, feature_extractor=None,
        # Flux-style latents are shifted as well as scaled; the pipelines read both from the VAE's config
        vae=vae(latent_channels=latent_channels, shift_factor=0.0609, scaling_factor=1.5035),
    ), out)


@_builder("tiny-sd3")
def build_tiny_sd3(out: Path, seed: int) -> None:
    """A stable-diffusion-3 checkpoint: two CLIP encoders with projections + T5, an MMDiT, a flow-matching
    scheduler; SD3's VAE has 16 latent channels (its inpainting pipeline insists), no quant convs, and
    shifts its latents (shapes from Diffusers' SD3 fast tests; two layers, as PAG perturbs ``blocks.1``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    latent_channels = 16
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=latent_channels, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=2 * CLIP_WIDTH, out_channels=latent_channels,
    )
    tokenizer_3 = t5_tokenizer()
    save(StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae(latent_channels=latent_channels, use_quant_conv=False, use_post_quant_conv=False,
                shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=clip_text_encoder(with_projection=True), tokenizer=write_clip_tokenizer(out / "tokenizer"),
        text_encoder_2=clip_text_encoder(with_projection=True), tokenizer_2=write_clip_tokenizer(out / "tokenizer_2"),
        text_encoder_3=t5_encoder(len(tokenizer_3)), tokenizer_3=tokenizer_3,
    ), out)


@_builder("tiny-flux")
def build_tiny_flux(out: Path, seed: int) -> None:
    """A flux checkpoint (FluxPipeline): CLIP (pooled) + T5, a Flux transformer over 2x2-packed latents."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    latent_channels = 4
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=T5_WIDTH, pooled_projection_dim=CLIP_WIDTH,
        axes_dims_rope=[4, 4, 8],
    )
    tokenizer_2 = t5_tokenizer()
    save(FluxPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae(latent_channels=latent_channels, shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=clip_text_encoder(), tokenizer=write_clip_tokenizer(out / "tokenizer"),
        text_encoder_2=t5_encoder(len(tokenizer_2)), tokenizer_2=tokenizer_2,
    ), out)


@_builder("tiny-if")
def build_tiny_if(out: Path, seed: int) -> None:
    """A DeepFloyd IF stage-I checkpoint (IFPipeline): T5 encoder + tokenizer built offline, a pixel-space
    UNet (no VAE) predicting mean and variance, DDPM with dynamic thresholding (shapes from Diffusers' IF
    fast tests); no safety checker or watermarker."""
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnAddedKVProcessor

    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    unet: Any = UNet2DConditionModel(
        sample_size=32, layers_per_block=1, block_out_channels=[8, 16],
        down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"], in_channels=3, out_channels=6,
        cross_attention_dim=T5_WIDTH, encoder_hid_dim=T5_WIDTH, attention_head_dim=4, addition_embed_type="text",
        addition_embed_type_num_heads=2, cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift",
        act_fn="gelu", norm_num_groups=4,
    )
    unet.set_attn_processor(AttnAddedKVProcessor())
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02,
        thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.0, prediction_type="epsilon",
        variance_type="learned_range",
    )
    save(IFPipeline(
        tokenizer=tokenizer, text_encoder=t5_encoder(len(tokenizer)), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False,
    ), out)


#: the prior's CLIP width: its image embeddings condition the Kandinsky 2.2 decoder
KANDINSKY_EMBED = 32


@_builder("tiny-kandinsky22-prior")
def build_tiny_kandinsky22_prior(out: Path, seed: int) -> None:
    """A Kandinsky 2.2 prior (KandinskyV22PriorPipeline): text -> CLIP image embedding (Diffusers' prior
    fast-test shapes, with a 32-pixel CLIP vision tower)."""
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=KANDINSKY_EMBED, image_size=32, projection_dim=KANDINSKY_EMBED, intermediate_size=37,
        num_attention_heads=4, num_channels=3, num_hidden_layers=2, patch_size=8,
    ))
    save(KandinskyV22PriorPipeline(
        prior=PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=KANDINSKY_EMBED,
                               num_layers=1),
        image_encoder=image_encoder, text_encoder=clip_text_encoder(with_projection=True),
        tokenizer=write_clip_tokenizer(out / "tokenizer"),
        scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                  num_train_timesteps=1000, clip_sample=True, clip_sample_range=10.0),
        image_processor=CLIPImageProcessor(crop_size=32, size=32, do_center_crop=True, do_normalize=True,
                                           do_resize=True, resample=3),
    ), out)


@_builder("tiny-kandinsky22-decoder")
def build_tiny_kandinsky22_decoder(out: Path, seed: int) -> None:
    """A Kandinsky 2.2 decoder (KandinskyV22Pipeline: UNet conditioned on image embeddings + MoVQ), whose
    model card names its prior as AutoPipeline's connected pipeline (``prior: [tiny-kandinsky22-prior]``,
    a folder under the model root here; a Hub repo id on the Hub, like kandinsky-2-2-decoder's card)."""
    build_kandinsky22_decoder(out, seed, inpaint=False)


@_builder("tiny-kandinsky22-decoder-inpaint")
def build_tiny_kandinsky22_decoder_inpaint(out: Path, seed: int) -> None:
    """The inpainting decoder (KandinskyV22InpaintPipeline): its UNet also takes the mask and the masked
    image's latents (9 input channels), like kandinsky-2-2-decoder-inpaint."""
    build_kandinsky22_decoder(out, seed, inpaint=True)


def build_kandinsky22_decoder(out: Path, seed: int, inpaint: bool) -> None:
    from diffusers import (
        DDPMScheduler,
        KandinskyV22InpaintPipeline,
        KandinskyV22Pipeline,
        UNet2DConditionModel,
        VQModel,
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        in_channels=9 if inpaint else 4, out_channels=8, addition_embed_type="image", block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", encoder_hid_dim=KANDINSKY_EMBED,
        encoder_hid_dim_type="image_proj", cross_attention_dim=KANDINSKY_EMBED, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type=None, norm_num_groups=4,
    )
    movq = VQModel(  # spatial norm groups by 32, so 32 channels is the least it takes
        block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
        num_vq_embeddings=12, out_channels=3, up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, prediction_type="epsilon", thresholding=False)
    pipeline = KandinskyV22InpaintPipeline if inpaint else KandinskyV22Pipeline
    save(pipeline(unet=unet, scheduler=scheduler, movq=movq), out)
    (out / "README.md").write_text("---\nprior:\n- tiny-kandinsky22-prior\n---\n\nA tiny Kandinsky 2.2 decoder.\n",
                                   encoding="utf-8")


def make_checkpoints(root: Path, names: list[str] | None = None, seed: int = 0, force: bool = False) -> list[Path]:
    """Build the named (default: all) tiny checkpoints and LoRAs under ``root``; existing ones are kept."""
    from hotpipe.workers import dev_loras  # its builders use this module's UNets

    builders = {**BUILDERS, **dev_loras.BUILDERS}
    built = []
    for name in names or list(builders):
        out = root / name
        markers = ("model_index.json", "config.json", dev_loras.LORA_FILE)
        if force or not any((out / marker).is_file() for marker in markers):
            builders[name](out, seed)
        built.append(out)
    return built
