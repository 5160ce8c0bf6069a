"""ControlNet / PAG variant resolution from the tables' family keys (parity with Diffusers: tests/workers)."""

from __future__ import annotations

import pytest

from hotpipe.shared.families import TASK_TABLES
from hotpipe.shared.job import Task
from hotpipe.shared.variants import UnsupportedVariant, Variant, pag_families, split, variant_class


@pytest.mark.parametrize(("family", "variant"), [
    ("stable-diffusion", Variant("stable-diffusion")),
    ("stable-diffusion-pag", Variant("stable-diffusion", None, True)),
    ("stable-diffusion-xl-controlnet-pag", Variant("stable-diffusion-xl", "controlnet", True)),
    ("stable-diffusion-xl-controlnet-union", Variant("stable-diffusion-xl", "controlnet-union")),
    ("flux-control", Variant("flux-control")),  # Flux Control is its own family here, not a ControlNet
    ("z-image-controlnet-inpaint", Variant("z-image-controlnet-inpaint")),
])
def test_split_takes_a_family_key_apart(family: str, variant: Variant) -> None:
    assert split(family) == variant
    if variant.controlnet or variant.pag:
        assert variant.key == family


@pytest.mark.parametrize(("class_name", "task", "controlnet", "pag", "expected"), [
    ("StableDiffusionPipeline", Task.TEXT2IMAGE, "controlnet", None, "StableDiffusionControlNetPipeline"),
    ("StableDiffusionPipeline", Task.IMAGE2IMAGE, "controlnet", None, "StableDiffusionControlNetImg2ImgPipeline"),
    ("StableDiffusionPipeline", Task.INPAINTING, "controlnet", True, "StableDiffusionControlNetPAGInpaintPipeline"),
    ("StableDiffusionXLPipeline", Task.IMAGE2IMAGE, "controlnet-union", None,
     "StableDiffusionXLControlNetUnionImg2ImgPipeline"),
    ("StableDiffusionXLImg2ImgPipeline", Task.INPAINTING, "controlnet", None,
     "StableDiffusionXLControlNetInpaintPipeline"),
    ("StableDiffusionPipeline", Task.TEXT2IMAGE, None, True, "StableDiffusionPAGPipeline"),
    ("StableDiffusionPAGPipeline", Task.TEXT2IMAGE, None, False, "StableDiffusionPipeline"),
    ("StableDiffusionPAGPipeline", Task.TEXT2IMAGE, "controlnet", None, "StableDiffusionControlNetPAGPipeline"),
    ("PixArtSigmaPipeline", Task.TEXT2IMAGE, None, True, "PixArtSigmaPAGPipeline"),
    ("FluxPipeline", Task.INPAINTING, "controlnet", None, "FluxControlNetInpaintPipeline"),
])
def test_variant_class(class_name: str, task: Task, controlnet: str | None, pag: bool | None,
                       expected: str) -> None:
    family, pipeline = variant_class(class_name, task, controlnet, pag)
    assert pipeline == expected
    assert TASK_TABLES[task][family] == expected


@pytest.mark.parametrize(("class_name", "task", "controlnet", "pag", "field", "message"), [
    ("FluxPipeline", Task.TEXT2IMAGE, None, True, "enable_pag",
     "family flux has no PAG pipeline for text2image; it has ControlNet for text2image, image2image, inpainting"),
    ("StableDiffusionPipeline", Task.IMAGE2IMAGE, "controlnet", True, "enable_pag",
     "family stable-diffusion has no ControlNet + PAG pipeline for image2image"),
    ("StableDiffusionPipeline", Task.TEXT2IMAGE, "controlnet-union", None, "controlnet",
     "family stable-diffusion has no ControlNet-Union pipeline for text2image"),
    ("PixArtSigmaPipeline", Task.TEXT2IMAGE, "controlnet", None, "controlnet",
     "family pixart-sigma has no ControlNet pipeline for text2image; it has PAG for text2image"),
    ("IFPipeline", Task.TEXT2IMAGE, None, True, "enable_pag",
     "family if has no PAG pipeline for text2image; it has no ControlNet or PAG pipelines"),
])
def test_missing_variant_is_refused_naming_the_field_and_what_exists(
        class_name: str, task: Task, controlnet: str | None, pag: bool | None, field: str, message: str) -> None:
    with pytest.raises(UnsupportedVariant) as exc:
        variant_class(class_name, task, controlnet, pag)
    assert (exc.value.status_code, exc.value.field) == (422, field)
    assert message in str(exc.value)


def test_pag_families() -> None:
    assert {"stable-diffusion", "stable-diffusion-xl", "stable-diffusion-3", "pixart-sigma", "sana", "hunyuan",
            "kolors"} <= set(pag_families())
    assert "flux" not in pag_families()
