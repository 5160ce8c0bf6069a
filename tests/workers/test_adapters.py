"""LoRA adapters on a hot pipeline: pixel identities, switching, eviction, task siblings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hotpipe.shared.checkpoints import fetch_hub_file, resolve
from hotpipe.shared.job import LoraRequest, Task
from hotpipe.shared.loras import LORA_FILE, resolve_loras
from hotpipe.shared.spec import LoraSpec
from hotpipe.workers import runner
from hotpipe.workers.adapters import Adapters, resident_adapters, resident_on
from hotpipe.workers.cache import PipelineCache

PARAMS = {"prompt": "x", "num_inference_steps": 3, "height": 32, "width": 32, "seed": 1}


def lora(model_root: Path, name: str, scale: float = 1.0) -> LoraSpec:
    [spec] = resolve_loras([LoraRequest(name=name, scale=scale)], resolve("tiny-sd", Task.TEXT2IMAGE, model_root),
                           model_root, (), fetch_hub_file, 4)
    return spec


def sd(cache: PipelineCache, model_root: Path, task: Task = Task.TEXT2IMAGE) -> Any:
    pipeline = {Task.TEXT2IMAGE: "StableDiffusionPipeline", Task.IMAGE2IMAGE: "StableDiffusionImg2ImgPipeline"}[task]
    return cache.get_key(cache.key(str(model_root / "tiny-sd"), None), task, pipeline)


def go_on(step: int, total: int) -> runner.Verdict:
    return runner.Verdict.GO_ON


def image(pipe: Any, adapters: Adapters, loras: list[LoraSpec], **inputs: Any) -> np.ndarray:
    adapters.activate(pipe, loras)
    return np.asarray(runner.run(pipe, PARAMS, inputs, go_on)[0])


def test_pixel_identities(cache: PipelineCache, model_root: Path) -> None:
    pipe, adapters = sd(cache, model_root), Adapters()
    a = lora(model_root, "tiny-lora-sd")
    never = image(pipe, adapters, [])
    cold = image(pipe, adapters, [a])
    without = image(pipe, adapters, [])
    warm = image(pipe, adapters, [a])
    zero = image(pipe, adapters, [a.model_copy(update={"scale": 0.0})])

    assert not np.array_equal(cold, never)  # the LoRA does something
    assert np.array_equal(without, never)  # no LoRA after adapters == a pipeline that never saw one
    assert np.array_equal(warm, cold)  # a resident adapter == its cold load
    assert np.array_equal(zero, never)  # scale 0 == no LoRA
    assert (adapters.stats.loads, adapters.stats.hits) == (1, 2)


def test_switching_between_resident_adapters_reloads_nothing(cache: PipelineCache, model_root: Path) -> None:
    pipe, adapters = sd(cache, model_root), Adapters()
    a, b = lora(model_root, "tiny-lora-sd"), lora(model_root, "tiny-lora-sd-b")
    first_a, first_b = image(pipe, adapters, [a]), image(pipe, adapters, [b])
    both = image(pipe, adapters, [a, b.model_copy(update={"scale": 0.5})])
    again_a, again_b = image(pipe, adapters, [a]), image(pipe, adapters, [b])

    assert not np.array_equal(first_a, first_b) and not np.array_equal(both, first_a)
    assert np.array_equal(again_a, first_a) and np.array_equal(again_b, first_b)
    assert adapters.stats.loads == 2
    assert resident_adapters(pipe) == [a.adapter, b.adapter]


def test_least_recently_used_adapter_is_deleted_past_the_bound(cache: PipelineCache, model_root: Path) -> None:
    pipe, adapters = sd(cache, model_root), Adapters(max_resident=1)
    a, b = lora(model_root, "tiny-lora-sd"), lora(model_root, "tiny-lora-sd-b")
    never = image(pipe, adapters, [])
    first_a = image(pipe, adapters, [a])
    image(pipe, adapters, [b])

    assert resident_adapters(pipe) == [b.adapter] and adapters.stats.evictions == 1
    assert a.adapter not in pipe.get_list_adapters().get("unet", [])
    assert np.array_equal(image(pipe, adapters, [a]), first_a)  # loaded again, same pixels
    assert np.array_equal(image(pipe, adapters, []), never)
    both = [a, b]
    image(pipe, adapters, both)  # a job's own adapters are never evicted for it
    assert set(resident_adapters(pipe)) == {a.adapter, b.adapter}


def test_task_siblings_share_the_resident_adapters(cache: PipelineCache, model_root: Path) -> None:
    t2i, adapters = sd(cache, model_root), Adapters()
    a = lora(model_root, "tiny-lora-sd")
    image(t2i, adapters, [a])
    i2i = sd(cache, model_root, Task.IMAGE2IMAGE)
    source = Image.new("RGB", (32, 32), (200, 30, 30))
    params = {**PARAMS, "strength": 0.7}
    adapters.activate(i2i, [])
    plain = np.asarray(runner.run(i2i, params, {"image": source}, go_on)[0])
    adapters.activate(i2i, [a])
    adapted = np.asarray(runner.run(i2i, params, {"image": source}, go_on)[0])

    assert adapters.stats.loads == 1  # already resident through the text2image pipeline's modules
    assert not np.array_equal(plain, adapted)


def test_pickle_weights_never_load(cache: PipelineCache, model_root: Path) -> None:
    pipe = sd(cache, model_root)
    bad = lora(model_root, "tiny-lora-sd").model_copy(update={"weight_name": "pytorch_lora_weights.bin",
                                                              "adapter": "lora_bad"})
    with pytest.raises(ValueError, match="safetensors"):
        Adapters().activate(pipe, [bad])


def test_hits_loads_and_evictions_are_counted(cache: PipelineCache, model_root: Path) -> None:
    events: list[str] = []
    pipe, adapters = sd(cache, model_root), Adapters(max_resident=1, count=events.append)
    a, b = lora(model_root, "tiny-lora-sd"), lora(model_root, "tiny-lora-sd-b")
    for loras in ([a], [a], [b]):
        adapters.activate(pipe, loras)
    assert events == ["load", "hit", "load", "eviction"]
    assert adapters.loras_on(pipe) == ["tiny-lora-sd-b"]


def test_adapter_bytes_count_in_the_cache_budget(cache: PipelineCache, model_root: Path) -> None:
    pipe, adapters = sd(cache, model_root), Adapters(max_resident=1)
    key = cache.key(str(model_root / "tiny-sd"), None)
    base = cache.stats().resident_bytes or 0
    a, b = lora(model_root, "tiny-lora-sd"), lora(model_root, "tiny-lora-sd-b")
    grew = adapters.activate(pipe, [a])
    cache.add_bytes(key, grew)
    assert grew == resident_on(pipe)[a.adapter] > 0
    assert cache.stats().resident_bytes == base + grew
    cache.add_bytes(key, adapters.activate(pipe, [b]))  # b loaded, a deleted: the same size again
    assert cache.stats().resident_bytes == base + resident_on(pipe)[b.adapter]
    assert adapters.activate(pipe, [b]) == 0  # resident: nothing grows


@pytest.mark.parametrize(("checkpoint", "task", "options", "name"), [
    ("tiny-sdxl", Task.TEXT2IMAGE, {}, "tiny-lora-sdxl"),
    ("tiny-sdxl", Task.IMAGE2IMAGE, {"enable_pag": True}, "tiny-lora-sdxl"),
    ("tiny-sd", Task.TEXT2IMAGE, {"controlnet": "tiny-controlnet-sd"}, "tiny-lora-sd"),
])
def test_sdxl_pag_and_controlnet_pipelines_take_loras(cache: PipelineCache, model_root: Path, checkpoint: str,
                                                      task: Task, options: dict[str, Any], name: str) -> None:
    from hotpipe.workers import loading

    resolved = resolve(checkpoint, task, model_root, **options)
    [spec] = resolve_loras([LoraRequest(name=name)], resolved, model_root, (), fetch_hub_file, 4)
    pipe = cache.get_key(cache.key_of(resolved), task, resolved.pipeline, loading.ExtraRef.from_spec(resolved))
    inputs = {"image": Image.new("RGB", (32, 32), (20, 120, 200))}
    if "controlnet" in options:
        inputs = {"control_image": Image.new("RGB", (32, 32), (250, 250, 250))}
    params = dict(PARAMS)
    if task is Task.IMAGE2IMAGE:  # the input sets the size
        params = {k: v for k, v in params.items() if k not in ("height", "width")} | {"strength": 0.8}
    if task is Task.TEXT2IMAGE and "controlnet" not in options:
        inputs = {}
    adapters = Adapters()
    plain = np.asarray(runner.run(pipe, params, inputs, go_on)[0])
    adapters.activate(pipe, [spec])
    adapted = np.asarray(runner.run(pipe, params, inputs, go_on)[0])
    adapters.activate(pipe, [])
    again = np.asarray(runner.run(pipe, params, inputs, go_on)[0])
    assert not np.array_equal(plain, adapted)
    assert np.array_equal(plain, again)


def test_a_hub_lora_from_the_hub_cache_loads_offline(cache: PipelineCache, model_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub repo id resolves from the local Hub cache (the API reads its header there) and the worker loads
    the same file with ``local_files_only``; no network either way."""
    import shutil

    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--tiny-style"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(model_root / "tiny-lora-sd" / "pytorch_lora_weights.safetensors", repo / "snapshots" / commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import

    [hub] = resolve_loras([LoraRequest(name="someone/tiny-style")], resolve("tiny-sd", Task.TEXT2IMAGE, model_root),
                          model_root, (), fetch_hub_file, 4)
    assert (hub.source, hub.location, hub.revision) == ("hub", "someone/tiny-style", commit)
    pipe, adapters = sd(cache, model_root), Adapters()
    local = image(pipe, Adapters(), [lora(model_root, "tiny-lora-sd")])
    assert np.array_equal(image(pipe, adapters, [hub]), local)  # the same weights, from the Hub cache
    assert adapters.stats.loads == 1


def test_a_hub_lora_is_downloaded_through_huggingface_hub_at_the_checked_commit(
        cache: PipelineCache, model_root: Path, hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer reads only the header; the worker downloads the one safetensors file of the commit the
    producer pinned, from the Hub ``HF_ENDPOINT`` names (a real one on loopback here), into its Hub cache."""
    from huggingface_hub import constants

    from tests.hub_server import commit_of, requests_served

    monkeypatch.setattr(constants, "ENDPOINT", hub)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "worker-cache"))
    [spec] = resolve_loras([LoraRequest(name="someone/tiny-style")], resolve("tiny-sd", Task.TEXT2IMAGE, model_root),
                           model_root, (), fetch_hub_file, 4)
    assert not (tmp_path / "worker-cache").exists()  # the check downloaded nothing
    before = len(requests_served(hub))
    pipe, adapters = sd(cache, model_root), Adapters()
    local = image(pipe, Adapters(), [lora(model_root, "tiny-lora-sd")])
    assert np.array_equal(image(pipe, adapters, [spec]), local)  # the same weights, through the Hub
    commit = commit_of("someone/tiny-style")
    downloads = [r for r in requests_served(hub)[before:] if r[0] == "GET" and "/resolve/" in r[1]]
    assert [path for _, path, _ in downloads] == [f"/someone/tiny-style/resolve/{commit}/{LORA_FILE}"]
    snapshot = tmp_path / "worker-cache" / "models--someone--tiny-style" / "snapshots" / commit
    assert [p.name for p in snapshot.iterdir()] == [LORA_FILE]
