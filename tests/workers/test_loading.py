"""From a resolved spec to the pipeline: ControlNet models and connected priors, loaded once, modules shared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hotpipe.shared.checkpoints import resolve
from hotpipe.shared.families import TASK_TABLES
from hotpipe.shared.job import Task
from hotpipe.shared.variants import CONTROLNET_MODELS, Variant
from hotpipe.workers import loading, tables_gen
from hotpipe.workers.cache import PipelineCache


def job_pipeline(cache: PipelineCache, checkpoint: str, task: Task, model_root: Path, **options: Any) -> Any:
    """The pipeline of a job on ``checkpoint``, from the hot cache as the worker gets it (``JobRunner._generate``)."""
    resolved = resolve(checkpoint, task, model_root, **options)
    return cache.get_key(cache.key_of(resolved), task, resolved.pipeline, loading.ExtraRef.from_spec(resolved))


def plain(cache: PipelineCache, checkpoint: Path, pipeline: str) -> Any:
    """The checkpoint's own text2image pipeline, from the same cache."""
    return cache.get_key(cache.key(str(checkpoint.resolve()), None), Task.TEXT2IMAGE, pipeline)


def test_controlnet_pipelines_share_the_checkpoint_and_one_controlnet_model(cache: PipelineCache,
                                                                            model_root: Path) -> None:
    pipes = [job_pipeline(cache, "tiny-sd", task, model_root, controlnet="tiny-controlnet-sd") for task in Task]
    sd = plain(cache, model_root / "tiny-sd", "StableDiffusionPipeline")

    assert [type(p).__name__ for p in pipes] == ["StableDiffusionControlNetPipeline",
                                                 "StableDiffusionControlNetImg2ImgPipeline",
                                                 "StableDiffusionControlNetInpaintPipeline"]
    assert len({id(p.controlnet) for p in pipes}) == 1
    assert all(p.unet is sd.unet and p.vae is sd.vae for p in pipes)
    assert cache.stats().misses == 1
    again = job_pipeline(cache, "tiny-sd", Task.TEXT2IMAGE, model_root, controlnet="tiny-controlnet-sd")
    assert again is pipes[0]


def test_pag_pipeline_is_built_on_the_same_modules(cache: PipelineCache, model_root: Path) -> None:
    pag = job_pipeline(cache, "tiny-sdxl", Task.IMAGE2IMAGE, model_root, enable_pag=True)
    sdxl = plain(cache, model_root / "tiny-sdxl", "StableDiffusionXLPipeline")
    assert type(pag).__name__ == "StableDiffusionXLPAGImg2ImgPipeline"
    assert pag.unet is sdxl.unet and pag.text_encoder_2 is sdxl.text_encoder_2


def test_combined_pipeline_takes_the_decoder_and_the_prior_its_card_names(cache: PipelineCache,
                                                                          model_root: Path) -> None:
    a = job_pipeline(cache, "tiny-kandinsky22-decoder", Task.TEXT2IMAGE, model_root)
    b = job_pipeline(cache, "tiny-kandinsky22-decoder", Task.IMAGE2IMAGE, model_root)

    assert (type(a).__name__, type(b).__name__) == ("KandinskyV22CombinedPipeline",
                                                    "KandinskyV22Img2ImgCombinedPipeline")
    assert a.unet is b.unet and a.prior_prior is b.prior_prior and a.prior_text_encoder is b.prior_text_encoder


@pytest.mark.parametrize(("model", "kind", "families"), [(m, k, f) for m, (k, f) in CONTROLNET_MODELS.items()])
def test_controlnet_model_table_matches_the_pipelines(model: str, kind: str, families: tuple[str, ...]) -> None:
    """Each family's ControlNet pipelines declare ``controlnet`` as (a list of) that model class."""
    for family in families:
        key = Variant(family, kind).key
        classes = {table[key] for table in TASK_TABLES.values() if key in table}
        assert classes, (model, family)
        for cls in classes:
            init = tables_gen.pipeline_class(cls).__init__
            assert model in str(init.__annotations__["controlnet"]), (model, cls)
