"""Family lookup, task-class resolution (AutoPipeline's tables, then hotpipe's) and routing.

Parity with the installed Diffusers itself is checked in tests/workers/test_family_parity.py;
these tests need no torch.
"""

from __future__ import annotations

import pytest

from hotpipe.shared import family_table
from hotpipe.shared.families import (
    BEYOND_TASK_TABLES,
    FAMILIES,
    LOOKUP_ORDER,
    TASK_TABLES,
    VARIANT_SUFFIXES,
    UnsupportedPipeline,
    auto_family_of,
    auto_task_class,
    base_family,
    family_of,
    task_class,
    tasks_of,
)
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
     "(task inpainting is not available for family pixart-sigma; it has: text2image)"),
    ("StableDiffusion3Pipeline", Task.INPAINTING,  # available: no error
     None),
    ("ChromaPipeline", Task.TEXT2IMAGE, None),
    ("FluxFillPipeline", Task.TEXT2IMAGE,  # a family only hotpipe knows: AutoPipeline says None
     "AutoPipeline can't find a pipeline linked to FluxFillPipeline for None "
     "(task text2image is not available for family flux-fill; it has: inpainting)"),
    ("WanPipeline", Task.TEXT2IMAGE,
     "AutoPipeline can't find a pipeline linked to WanPipeline for wan "
     "(family wan has no text2image, image2image or inpainting pipeline)"),
])
def test_unsupported_combinations_are_refused(class_name: str, task: Task, message: str | None) -> None:
    if message is None:
        assert task_class(class_name, task)
        return
    with pytest.raises(UnsupportedPipeline) as exc:
        task_class(class_name, task)
    assert str(exc.value) == message
    assert (exc.value.status_code, exc.value.code, exc.value.field) == (422, "unsupported_pipeline", "checkpoint")


def test_every_task_has_a_non_empty_table() -> None:
    assert set(TASK_TABLES) == set(Task)
    for table in TASK_TABLES.values():
        assert table
        assert all(family and cls.endswith("Pipeline") for family, cls in table.items())


@pytest.mark.parametrize(("class_name", "task", "family", "pipeline"), [
    # a task AutoPipeline's family lacks
    ("ChromaPipeline", Task.IMAGE2IMAGE, "chroma", "ChromaImg2ImgPipeline"),
    ("ChromaPipeline", Task.INPAINTING, "chroma", "ChromaInpaintPipeline"),
    ("FluxKontextPipeline", Task.INPAINTING, "flux-kontext", "FluxKontextInpaintPipeline"),
    ("Flux2KleinPipeline", Task.INPAINTING, "flux2-klein", "Flux2KleinInpaintPipeline"),
    # a checkpoint saved as a class only hotpipe's table has
    ("ChromaInpaintPipeline", Task.TEXT2IMAGE, "chroma", "ChromaPipeline"),
    ("SanaSprintPipeline", Task.IMAGE2IMAGE, "sana-sprint", "SanaSprintImg2ImgPipeline"),
    ("FluxFillPipeline", Task.INPAINTING, "flux-fill", "FluxFillPipeline"),
])
def test_beyond_autopipeline_resolves_through_hotpipes_table(class_name: str, task: Task, family: str,
                                                              pipeline: str) -> None:
    assert task_class(class_name, task) == (family, pipeline)
    assert auto_task_class(class_name, task) is None  # what AutoPipeline itself would do: raise


def test_autopipeline_tables_come_first() -> None:
    assert auto_task_class("ChromaPipeline", Task.TEXT2IMAGE) == "ChromaPipeline"
    assert (auto_family_of("ChromaImg2ImgPipeline"), family_of("ChromaImg2ImgPipeline")) == (None, "chroma")
    assert auto_family_of("FluxKontextPipeline") == family_of("FluxKontextPipeline") == "flux-kontext"


def test_hotpipes_table_only_fills_gaps() -> None:
    """No entry shadows or repeats AutoPipeline's: resolution would differ from Diffusers otherwise."""
    auto_classes = {cls for table in LOOKUP_ORDER for cls in table.values()}
    for task, table in BEYOND_TASK_TABLES.items():
        for family, cls in table.items():
            assert family not in TASK_TABLES[task], (task, family)
            assert cls not in auto_classes, cls
            assert cls in family_table.CALL_ARGS, f"{cls}: regenerate shared/hotpipe/shared/family_table.py"


@pytest.mark.parametrize(("family", "tasks"), [
    ("pixart-sigma", [Task.TEXT2IMAGE]),
    ("chroma", [Task.TEXT2IMAGE, Task.IMAGE2IMAGE, Task.INPAINTING]),
    ("flux-fill", [Task.INPAINTING]),
    ("wan", []),
    ("no-such-family", []),
])
def test_tasks_of(family: str, tasks: list[Task]) -> None:
    assert tasks_of(family) == tasks


#: every variant key of the committed tables and the family whose queue runs it
VARIANTS = {
    "cogview4-control": "cogview4",
    "flux-control": "flux",
    "flux-controlnet": "flux",
    "hunyuan-pag": "hunyuan",
    "kolors-pag": "kolors",
    "pixart-sigma-pag": "pixart-sigma",
    "qwenimage-controlnet": "qwenimage",
    "sana-pag": "sana",
    "stable-diffusion-3-controlnet": "stable-diffusion-3",
    "stable-diffusion-3-pag": "stable-diffusion-3",
    "stable-diffusion-controlnet": "stable-diffusion",
    "stable-diffusion-controlnet-pag": "stable-diffusion",
    "stable-diffusion-pag": "stable-diffusion",
    "stable-diffusion-xl-controlnet": "stable-diffusion-xl",
    "stable-diffusion-xl-controlnet-pag": "stable-diffusion-xl",
    "stable-diffusion-xl-controlnet-union": "stable-diffusion-xl",
    "stable-diffusion-xl-pag": "stable-diffusion-xl",
    "z-image-controlnet": "z-image",
    "z-image-controlnet-inpaint": "z-image",
}


def test_variants_route_to_their_base_family() -> None:
    assert {f: base_family(f) for f in FAMILIES if base_family(f) != f} == VARIANTS


@pytest.mark.parametrize("family", ["stable-diffusion", "stable-diffusion-xl", "stable-diffusion-3", "flux",
                                    "flux-kontext", "flux2-klein", "qwenimage-edit", "z-image-omni", "wan-i2v",
                                    "helios-pyramid", "sana-sprint", "flux-fill"])
def test_other_families_are_their_own_base(family: str) -> None:
    assert family in FAMILIES
    assert base_family(family) == family


@pytest.mark.parametrize(("family", "base"), [
    ("unknown-pag", "unknown-pag"),  # the stripped name must be a known family
    ("pag", "pag"),
    ("-pag", "-pag"),
    ("stable-diffusion-xl-union", "stable-diffusion-xl-union"),
])
def test_unknown_keys_are_left_alone(family: str, base: str) -> None:
    assert base_family(family) == base


def test_a_base_is_its_own_base() -> None:
    assert all(base_family(base_family(f)) == base_family(f) for f in FAMILIES)


def test_every_base_is_a_family_with_an_image_task() -> None:
    for variant, base in VARIANTS.items():
        assert base in FAMILIES and tasks_of(base), (variant, base)
        assert variant.endswith(VARIANT_SUFFIXES)
