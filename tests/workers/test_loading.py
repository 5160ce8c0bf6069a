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


def spec_for(checkpoint: str, task: Task, model_root: Path, **options: Any) -> dict[str, Any]:
    return {"resolved": resolve(checkpoint, task, model_root, **options).to_json(), "task": task.value}


def test_controlnet_pipelines_share_the_checkpoint_and_one_controlnet_model(cache: PipelineCache,
                                                                            model_root: Path) -> None:
    pipes = []
    for task in Task:
        spec = spec_for("tiny-sd", task, model_root, controlnet="tiny-controlnet-sd")
        pipes.append(loading.pipeline_for(cache, spec, spec["resolved"]["pipeline"]))
    plain = cache.get(str((model_root / "tiny-sd").resolve()), None, Task.TEXT2IMAGE, "StableDiffusionPipeline")

    assert [type(p).__name__ for p in pipes] == ["StableDiffusionControlNetPipeline",
                                                 "StableDiffusionControlNetImg2ImgPipeline",
                                                 "StableDiffusionControlNetInpaintPipeline"]
    assert len({id(p.controlnet) for p in pipes}) == 1
    assert all(p.unet is plain.unet and p.vae is plain.vae for p in pipes)
    assert cache.stats().misses == 1
    again = spec_for("tiny-sd", Task.TEXT2IMAGE, model_root, controlnet="tiny-controlnet-sd")
    assert loading.pipeline_for(cache, again, again["resolved"]["pipeline"]) is pipes[0]


def test_pag_pipeline_is_built_on_the_same_modules(cache: PipelineCache, model_root: Path) -> None:
    spec = spec_for("tiny-sdxl", Task.IMAGE2IMAGE, model_root, enable_pag=True)
    pag = loading.pipeline_for(cache, spec, spec["resolved"]["pipeline"])
    plain = cache.get(str((model_root / "tiny-sdxl").resolve()), None, Task.TEXT2IMAGE, "StableDiffusionXLPipeline")
    assert type(pag).__name__ == "StableDiffusionXLPAGImg2ImgPipeline"
    assert pag.unet is plain.unet and pag.text_encoder_2 is plain.text_encoder_2


def test_combined_pipeline_takes_the_decoder_and_the_prior_its_card_names(cache: PipelineCache,
                                                                          model_root: Path) -> None:
    t2i = spec_for("tiny-kandinsky22-decoder", Task.TEXT2IMAGE, model_root)
    i2i = spec_for("tiny-kandinsky22-decoder", Task.IMAGE2IMAGE, model_root)
    a = loading.pipeline_for(cache, t2i, t2i["resolved"]["pipeline"])
    b = loading.pipeline_for(cache, i2i, i2i["resolved"]["pipeline"])

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
