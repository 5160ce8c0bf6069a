"""The hot cache: one load per checkpoint, task switches share the very same modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hotpipe.shared.job import Task
from hotpipe.workers.cache import PipelineCache, ResolutionMismatch

TASKS = [(Task.TEXT2IMAGE, "StableDiffusionPipeline"), (Task.IMAGE2IMAGE, "StableDiffusionImg2ImgPipeline"),
         (Task.INPAINTING, "StableDiffusionInpaintPipeline")]


def parameter_storages(pipes: list[Any]) -> set[int]:
    """Data pointers of every parameter tensor held by ``pipes`` (unique storages)."""
    ptrs: set[int] = set()
    for pipe in pipes:
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                ptrs.update(p.untyped_storage().data_ptr() for p in module.parameters())
    return ptrs


def test_loads_once_and_switches_tasks_on_the_same_modules(cache: PipelineCache, model_root: Path) -> None:
    location = str(model_root / "tiny-sd")
    pipes = [cache.get_key(cache.key(location, None), task, cls) for task, cls in TASKS]

    assert [type(p).__name__ for p in pipes] == [cls for _, cls in TASKS]
    assert (cache.stats().misses, cache.stats().hits) == (1, 2)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert len({id(getattr(p, name)) for p in pipes}) == 1, name
    assert parameter_storages(pipes) == parameter_storages(pipes[:1])
    assert all(p.unet.dtype == torch.float32 for p in pipes)
    assert cache.get_key(cache.key(location, None), Task.TEXT2IMAGE, "StableDiffusionPipeline") is pipes[0]


def test_mismatched_class_is_refused(cache: PipelineCache, model_root: Path) -> None:
    with pytest.raises(ResolutionMismatch, match="StableDiffusionImg2ImgPipeline"):
        cache.get_key(cache.key(str(model_root / "tiny-sd"), None), Task.IMAGE2IMAGE,
                      "StableDiffusionXLImg2ImgPipeline")


BEYOND = [(Task.TEXT2IMAGE, "ChromaPipeline"), (Task.IMAGE2IMAGE, "ChromaImg2ImgPipeline"),
          (Task.INPAINTING, "ChromaInpaintPipeline")]


def test_tasks_autopipeline_cannot_reach_are_built_on_the_same_modules(cache: PipelineCache,
                                                                       model_root: Path) -> None:
    """Chroma image2image/inpainting come from hotpipe's table, built with ``<Class>.from_pipe``."""
    location = str(model_root / "tiny-chroma")
    pipes = [cache.get_key(cache.key(location, None), task, cls) for task, cls in BEYOND]

    assert [type(p).__name__ for p in pipes] == [cls for _, cls in BEYOND]
    assert (cache.stats().misses, cache.stats().hits) == (1, 2)
    for name in ("transformer", "vae", "text_encoder", "tokenizer"):
        assert len({id(getattr(p, name)) for p in pipes}) == 1, name
    assert parameter_storages(pipes) == parameter_storages(pipes[:1])
    assert all(p.transformer.dtype == torch.float32 for p in pipes)


def test_hotpipes_class_for_another_family_is_refused(cache: PipelineCache, model_root: Path) -> None:
    # ChromaInpaintPipeline is in hotpipe's table for chroma, not for stable-diffusion: AutoPipeline decides
    with pytest.raises(ResolutionMismatch, match="StableDiffusionInpaintPipeline"):
        cache.get_key(cache.key(str(model_root / "tiny-sd"), None), Task.INPAINTING, "ChromaInpaintPipeline")


def test_refiner_is_its_own_image2image_pipeline(cache: PipelineCache, model_root: Path) -> None:
    location = str(model_root / "tiny-sdxl-refiner")
    refiner = cache.get_key(cache.key(location, None), Task.IMAGE2IMAGE, "StableDiffusionXLImg2ImgPipeline")
    inpaint = cache.get_key(cache.key(location, None), Task.INPAINTING, "StableDiffusionXLInpaintPipeline")

    assert (refiner.text_encoder, refiner.tokenizer) == (None, None)
    assert refiner.config.requires_aesthetics_score and inpaint.config.requires_aesthetics_score
    assert inpaint.unet is refiner.unet and inpaint.text_encoder_2 is refiner.text_encoder_2


def test_task_switches_do_not_grow_the_measured_bytes(cache: PipelineCache, model_root: Path) -> None:
    location = str(model_root / "tiny-sd")
    cache.get_key(cache.key(location, None), *TASKS[0])
    one = cache.stats()
    for task, cls in TASKS[1:]:
        cache.get_key(cache.key(location, None), task, cls)
    three = cache.stats()

    assert one.resident_bytes > 0
    assert three.resident_bytes == one.resident_bytes
    assert (three.resident_pipelines, three.misses, three.hits, three.evictions) == (1, 1, 2, 0)
    assert three.checkpoints == [location]


def test_two_runs_never_share_a_scheduler(cache: PipelineCache, model_root: Path) -> None:
    from hotpipe.workers import runner

    pipe = cache.get_key(cache.key(str(model_root / "tiny-sd"), None), *TASKS[0])
    params = {"prompt": "x", "num_inference_steps": 2, "height": 32, "width": 32, "seed": 1}
    seen = []
    for _ in range(2):
        runner.run(pipe, params, {}, lambda step, total: runner.Verdict.GO_ON)
        seen.append(pipe.scheduler)
    assert seen[0] is not seen[1]
