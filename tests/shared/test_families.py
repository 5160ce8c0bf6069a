"""Family lookup and task-class resolution over Diffusers' AutoPipeline tables."""

from __future__ import annotations

import pytest

from hotpipe.shared.families import TASK_TABLES, UnsupportedPipeline, family_of, task_class
from hotpipe.shared.job import Task


@pytest.mark.parametrize(("class_name", "family"), [
    ("StableDiffusionPipeline", "stable-diffusion"),
    ("StableDiffusionImg2ImgPipeline", "stable-diffusion"),
    ("StableDiffusionInpaintPipeline", "stable-diffusion"),
    ("StableDiffusionXLPipeline", "stable-diffusion-xl"),
    ("FluxKontextPipeline", "flux-kontext"),
    ("PixArtSigmaPipeline", "pixart-sigma"),
    ("KandinskyV22Pipeline", "kandinsky22"),  # a decoder class
    ("KandinskyV22InpaintPipeline", "kandinsky22"),
    ("WuerstchenDecoderPipeline", "wuerstchen"),
    ("WanPipeline", "wan"),  # a video family
    ("ShapEImg2ImgPipeline", None),
    ("stablediffusionpipeline", None),
    ("", None),
])
def test_family_of(class_name: str, family: str | None) -> None:
    assert family_of(class_name) == family


@pytest.mark.parametrize(("class_name", "task", "family", "pipeline"), [
    ("StableDiffusionPipeline", Task.TEXT2IMAGE, "stable-diffusion", "StableDiffusionPipeline"),
    ("StableDiffusionPipeline", Task.IMAGE2IMAGE, "stable-diffusion", "StableDiffusionImg2ImgPipeline"),
    ("StableDiffusionPipeline", Task.INPAINTING, "stable-diffusion", "StableDiffusionInpaintPipeline"),
    ("StableDiffusionInpaintPipeline", Task.TEXT2IMAGE, "stable-diffusion", "StableDiffusionPipeline"),
    ("StableDiffusionXLPipeline", Task.INPAINTING, "stable-diffusion-xl", "StableDiffusionXLInpaintPipeline"),
    ("FluxPipeline", Task.IMAGE2IMAGE, "flux", "FluxImg2ImgPipeline"),
    ("KandinskyV22Pipeline", Task.TEXT2IMAGE, "kandinsky22", "KandinskyV22CombinedPipeline"),
    ("KandinskyV22Pipeline", Task.INPAINTING, "kandinsky22", "KandinskyV22InpaintCombinedPipeline"),
    ("PixArtSigmaPipeline", Task.TEXT2IMAGE, "pixart-sigma", "PixArtSigmaPipeline"),
])
def test_task_class(class_name: str, task: Task, family: str, pipeline: str) -> None:
    assert task_class(class_name, task) == (family, pipeline)


@pytest.mark.parametrize(("class_name", "task", "message"), [
    ("ShapEImg2ImgPipeline", Task.IMAGE2IMAGE,
     "AutoPipeline can't find a pipeline linked to ShapEImg2ImgPipeline for None"),
    ("PixArtSigmaPipeline", Task.INPAINTING,
     "AutoPipeline can't find a pipeline linked to PixArtSigmaPipeline for pixart-sigma "
     "(task inpainting is not available for family pixart-sigma)"),
    ("WanPipeline", Task.TEXT2IMAGE,
     "AutoPipeline can't find a pipeline linked to WanPipeline for wan "
     "(task text2image is not available for family wan)"),
])
def test_unsupported_combinations_are_refused(class_name: str, task: Task, message: str) -> None:
    with pytest.raises(UnsupportedPipeline) as exc:
        task_class(class_name, task)
    assert str(exc.value) == message
    assert (exc.value.status_code, exc.value.code, exc.value.field) == (422, "unsupported_pipeline", "checkpoint")


def test_every_task_has_a_non_empty_table() -> None:
    assert set(TASK_TABLES) == set(Task)
    for table in TASK_TABLES.values():
        assert table
        assert all(family and cls.endswith("Pipeline") for family, cls in table.items())
