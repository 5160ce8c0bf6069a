"""Hot pipelines keep their execution device instead of walking every module for it: same class name,
same device, same pixels; task siblings and pipelines holding LoRA adapters too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from hotpipe.shared.checkpoints import fetch_hub_file, resolve
from hotpipe.shared.job import LoraRequest, Task
from hotpipe.shared.loras import resolve_loras
from hotpipe.workers import runner
from hotpipe.workers.adapters import Adapters
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.pinned_device import ATTR, PinnedDevice, pin

PARAMS = {"prompt": "x", "num_inference_steps": 3, "height": 32, "width": 32, "seed": 4}


def go_on(step: int, total: int) -> runner.Verdict:
    return runner.Verdict.GO_ON


def hot(cache: PipelineCache, model_root: Path, task: Task, pipeline: str) -> Any:
    return cache.get_key(cache.key(str(model_root / "tiny-sd"), None), task, pipeline)


def unpinned(model_root: Path) -> Any:
    pipe = DiffusionPipeline.from_pretrained(str(model_root / "tiny-sd"), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_cache_hands_out_pinned_pipelines_of_the_class_diffusers_built(cache: PipelineCache,
                                                                           model_root: Path) -> None:
    t2i = hot(cache, model_root, Task.TEXT2IMAGE, "StableDiffusionPipeline")
    i2i = hot(cache, model_root, Task.IMAGE2IMAGE, "StableDiffusionImg2ImgPipeline")  # a from_pipe sibling
    for pipe, cls in ((t2i, StableDiffusionPipeline), (i2i, StableDiffusionImg2ImgPipeline)):
        assert isinstance(pipe, PinnedDevice) and isinstance(pipe, cls)
        assert type(pipe).__name__ == cls.__name__ and type(pipe).__module__ == cls.__module__
        assert pipe._execution_device == DiffusionPipeline._execution_device.fget(pipe) == torch.device("cpu")
        assert ATTR in pipe.__dict__
    assert pin(t2i) is t2i and type(pin(t2i)) is type(t2i)  # pinning twice changes nothing


def test_pinned_pipelines_give_the_pixels_of_unpinned_ones(cache: PipelineCache, model_root: Path) -> None:
    plain = unpinned(model_root)
    assert not isinstance(plain, PinnedDevice)
    pinned = hot(cache, model_root, Task.TEXT2IMAGE, "StableDiffusionPipeline")
    assert np.array_equal(np.asarray(runner.run(plain, PARAMS, {}, go_on)[0]),
                          np.asarray(runner.run(pinned, PARAMS, {}, go_on)[0]))
    source = Image.new("RGB", (32, 32), (30, 160, 90))
    params = {**PARAMS, "strength": 0.6}
    i2i = hot(cache, model_root, Task.IMAGE2IMAGE, "StableDiffusionImg2ImgPipeline")
    plain_i2i = StableDiffusionImg2ImgPipeline.from_pipe(plain, dtype=torch.float32)
    assert np.array_equal(np.asarray(runner.run(plain_i2i, params, {"image": source}, go_on)[0]),
                          np.asarray(runner.run(i2i, params, {"image": source}, go_on)[0]))


def test_a_pinned_pipeline_with_a_lora_gives_the_pixels_of_an_unpinned_one(cache: PipelineCache,
                                                                            model_root: Path) -> None:
    [spec] = resolve_loras([LoraRequest(name="tiny-lora-sd", scale=0.8)],
                           resolve("tiny-sd", Task.TEXT2IMAGE, model_root), model_root, (), fetch_hub_file, 4)
    plain, pinned = unpinned(model_root), hot(cache, model_root, Task.TEXT2IMAGE, "StableDiffusionPipeline")
    images = []
    for pipe in (plain, pinned):
        Adapters().activate(pipe, [spec])
        images.append(np.asarray(runner.run(pipe, PARAMS, {}, go_on)[0]))
    assert np.array_equal(images[0], images[1])
    assert pinned._execution_device == torch.device("cpu")
