"""The lean LoRA forward equals PEFT's bit for bit on every wrapped layer, and PEFT's runs where it must."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hotpipe.shared.checkpoints import fetch_hub_file, resolve
from hotpipe.shared.job import LoraRequest, Task
from hotpipe.shared.loras import resolve_loras
from hotpipe.workers import runner
from hotpipe.workers.adapters import Adapters
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.lora_fast import PEFT_FORWARD, install, lean_forward, lean_terms, lora_layers, uninstall

#: checkpoint, its LoRA
CHECKPOINTS = [("tiny-sd", "tiny-lora-sd"), ("tiny-sdxl", "tiny-lora-sdxl")]


@pytest.fixture(params=CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def adapted(request: pytest.FixtureRequest, model_root: Path) -> tuple[Any, str, str]:
    """A hot pipeline holding its LoRA twice (adapters ``a`` from the worker's path and ``b`` loaded beside it)."""
    checkpoint, name = request.param
    cache = PipelineCache("cpu", torch.float32)
    resolved = resolve(checkpoint, Task.TEXT2IMAGE, model_root)
    [spec] = resolve_loras([LoraRequest(name=name)], resolved, model_root, (), fetch_hub_file, 4)
    pipe = cache.get_key(cache.key_of(resolved), Task.TEXT2IMAGE, resolved.pipeline)
    Adapters().activate(pipe, [spec])
    pipe.load_lora_weights(spec.location, weight_name=spec.weight_name, adapter_name="b", use_safetensors=True,
                           local_files_only=True)
    install(pipe)
    return pipe, spec.adapter, "b"


def inputs(layer: Any, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 5, int(layer.base_layer.in_features), generator=generator)


def both(layer: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lean, PEFT's) outputs for the same input, each from the same seed (a dropout draws)."""
    with torch.no_grad():
        torch.manual_seed(0)
        lean = lean_forward(layer, x)
        torch.manual_seed(0)
        return lean, PEFT_FORWARD(layer, x)


@pytest.mark.parametrize("active", ["one", "two", "disabled"])
def test_lean_forward_equals_peft_bit_for_bit_on_every_wrapped_layer(adapted: tuple[Any, str, str],
                                                                     active: str) -> None:
    pipe, a, b = adapted
    if active == "disabled":
        pipe.disable_lora()
    else:
        pipe.set_adapters([a, b][: 1 if active == "one" else 2], [1.0] if active == "one" else [0.7, -1.3])
    layers = lora_layers(pipe)
    assert len(layers) > 10 and all(vars(layer)["forward"].__func__ is lean_forward for layer in layers)
    for i, layer in enumerate(layers):
        x = inputs(layer, i)
        lean, peft = both(layer, x)
        assert torch.equal(lean, peft), f"layer {i}"
        if active != "disabled":
            assert lean_terms(layer, x) is not None  # the lean path ran, not the fallback
            assert not torch.equal(peft, layer.base_layer(x))  # and the adapters did something


def test_unsupported_cases_take_peft_forward(adapted: tuple[Any, str, str]) -> None:
    pipe, a, _ = adapted
    pipe.set_adapters([a], [1.0])
    dropped, merged, half = lora_layers(pipe)[:3]
    x = inputs(dropped, 1)

    dropped.lora_dropout[a] = nn.Dropout(0.5).train()  # lean would leave the dropout out: only PEFT's matches
    assert lean_terms(dropped, x) is None
    lean, peft = both(dropped, x)
    assert torch.equal(lean, peft)
    assert not torch.equal(peft, lean_after_identity(dropped, a, x))

    merged.merge(adapter_names=[a])  # merged weights already hold the adapter: adding it again would differ
    x = inputs(merged, 2)
    lean, peft = both(merged, x)
    with torch.no_grad():
        assert torch.equal(lean, peft) and torch.equal(lean, merged.base_layer(x))
    merged.unmerge()

    x = inputs(half, 3).half()  # PEFT casts the input to the adapter's dtype: left to PEFT
    assert lean_terms(half, x) is None


def test_module_hooks_are_honoured_through_peft_forward(adapted: tuple[Any, str, str]) -> None:
    pipe, a, _ = adapted
    pipe.set_adapters([a], [1.0])
    layer = lora_layers(pipe)[0]
    x, seen = inputs(layer, 4), []
    own = layer.lora_A[a].register_forward_hook(lambda module, args, out: seen.append("own"))
    assert lean_terms(layer, x) is None
    both(layer, x)
    own.remove()
    assert lean_terms(layer, x) is not None
    every = nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append("global") if module is layer.lora_B[a] else None)
    try:
        lean, peft = both(layer, x)
    finally:
        every.remove()
    assert torch.equal(lean, peft)
    assert seen == ["own", "own", "global", "global"]  # each hook ran in the lean call and in PEFT's


def lean_after_identity(layer: Any, adapter: str, x: torch.Tensor) -> torch.Tensor:
    """What the lean path gives with the dropout back to ``Identity`` (so a dropout that ran shows)."""
    dropout = layer.lora_dropout[adapter]
    layer.lora_dropout[adapter] = nn.Identity()
    try:
        with torch.no_grad():
            return lean_forward(layer, x)
    finally:
        layer.lora_dropout[adapter] = dropout


def test_a_whole_job_gives_peft_pixels_on_the_pipeline_and_its_task_sibling(model_root: Path) -> None:
    cache, adapters = PipelineCache("cpu", torch.float32), Adapters()
    key = cache.key(str(model_root / "tiny-sd"), None)
    pipe = cache.get_key(key, Task.TEXT2IMAGE, "StableDiffusionPipeline")
    [spec] = resolve_loras([LoraRequest(name="tiny-lora-sd", scale=0.8)], resolve("tiny-sd", Task.TEXT2IMAGE,
                           model_root), model_root, (), fetch_hub_file, 4)
    adapters.activate(pipe, [spec])
    sibling = cache.get_key(key, Task.IMAGE2IMAGE, "StableDiffusionImg2ImgPipeline")  # from_pipe: shared modules
    params = {"prompt": "x", "num_inference_steps": 3, "height": 32, "width": 32, "seed": 1}
    sibling_params = {"prompt": "x", "num_inference_steps": 3, "strength": 0.8, "seed": 1}
    start = {"image": Image.new("RGB", (32, 32), (20, 120, 200))}

    def images() -> list[np.ndarray]:
        return [np.asarray(runner.run(pipe, params, {}, go_on)[0]),
                np.asarray(runner.run(sibling, sibling_params, start, go_on)[0])]

    assert all(vars(layer).get("forward") is not None for layer in lora_layers(sibling))
    lean = images()
    uninstall(pipe)
    assert all("forward" not in vars(layer) for layer in lora_layers(sibling))
    peft = images()
    assert all(np.array_equal(a, b) for a, b in zip(lean, peft, strict=True))


def go_on(step: int, total: int) -> runner.Verdict:
    return runner.Verdict.GO_ON
