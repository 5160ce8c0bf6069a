"""The cache under a budget: what it evicts, that eviction really frees, and out-of-memory retries."""

from __future__ import annotations

import gc
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
from redis.backoff import NoBackoff
from redis.retry import Retry

from hotpipe.shared.job import Task
from hotpipe.shared.popularity import Popularity
from hotpipe.workers import memory
from hotpipe.workers.cache import CacheKey, PipelineCache, load_pipeline

T2I = (Task.TEXT2IMAGE, "StableDiffusionPipeline")
SD = "stable-diffusion"
ALL_TASKS = [T2I, (Task.IMAGE2IMAGE, "StableDiffusionImg2ImgPipeline"),
             (Task.INPAINTING, "StableDiffusionInpaintPipeline")]


@pytest.fixture(scope="module")
def copies(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Four copies of tiny-sd under different names (different cache keys)."""
    root = tmp_path_factory.mktemp("copies")
    out = []
    for i in range(4):
        shutil.copytree(model_root / "tiny-sd", root / f"sd-{i}")
        out.append(str(root / f"sd-{i}"))
    return out


@pytest.fixture(scope="module")
def big_copies(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two checkpoints of ~10 MB (tiny-sd with a wider UNet), so memory growth is measurable."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    root = tmp_path_factory.mktemp("big")
    pipe = StableDiffusionPipeline.from_pretrained(model_root / "tiny-sd")
    pipe.unet = UNet2DConditionModel(
        block_out_channels=(64, 128), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=2)
    out = []
    for i in range(2):
        pipe.save_pretrained(root / f"big-{i}", safe_serialization=True)
        out.append(str(root / f"big-{i}"))
    del pipe
    gc.collect()
    return out


def test_count_bound_evicts_the_least_recently_used(copies: list[str]) -> None:
    cache = PipelineCache("cpu", torch.float32, max_pipelines=2)
    cache.get_key(cache.key(copies[0], None), *T2I)
    cache.get_key(cache.key(copies[1], None), *T2I)
    cache.get_key(cache.key(copies[0], None), *T2I)  # copies[1] is now the least recently used
    cache.get_key(cache.key(copies[2], None), *T2I)

    stats = cache.stats()
    assert sorted(stats.checkpoints) == sorted([copies[0], copies[2]])
    assert (stats.hits, stats.misses, stats.evictions, stats.resident_pipelines) == (1, 3, 1, 2)


def test_least_used_policy_keeps_the_popular_checkpoint(copies: list[str]) -> None:
    cache = PipelineCache("cpu", torch.float32, max_pipelines=2, policy="lfu")
    for location in (copies[0], copies[0], copies[0], copies[1], copies[2]):
        cache.get_key(cache.key(location, None), *T2I)
    assert sorted(cache.stats().checkpoints) == sorted([copies[0], copies[2]])


def test_memory_budget_is_measured_and_kept(copies: list[str]) -> None:
    probe = PipelineCache("cpu", torch.float32)
    probe.get_key(probe.key(copies[0], None), *T2I)
    one = probe.stats().resident_bytes
    cache = PipelineCache("cpu", torch.float32, budget_bytes=int(one * 2.5))
    for location in copies:
        for task in ALL_TASKS:  # siblings share modules: they never count twice
            cache.get_key(cache.key(location, None), *task)
        stats = cache.stats()
        assert stats.resident_bytes <= cache.budget_bytes
    assert stats.resident_pipelines == 2 and stats.resident_bytes == 2 * one
    assert stats.checkpoints == copies[2:] and stats.evictions == 2


def test_eviction_frees_every_pipeline_and_memory(big_copies: list[str]) -> None:
    """20+ load/evict cycles: no evicted pipeline (or task sibling) survives; RSS stays flat."""
    cache = PipelineCache("cpu", torch.float32, max_pipelines=1)
    size = 0
    refs: list[weakref.ref[Any]] = []
    rss_after_warmup = 0
    for cycle in range(24):
        location = big_copies[cycle % 2]
        pipes = [cache.get_key(cache.key(location, None), *task) for task in ALL_TASKS]
        size = max(size, cache.stats().resident_bytes)
        refs += [weakref.ref(p) for p in pipes]
        del pipes
        if cycle == 3:
            gc.collect()
            rss_after_warmup = memory.rss_bytes()
    cache.evict_others()
    gc.collect()

    assert cache.stats().evictions == 24 and cache.stats().resident_pipelines == 0
    assert [r for r in refs if r() is not None] == []
    assert size > 5_000_000
    growth = memory.rss_bytes() - rss_after_warmup
    assert growth < size, f"RSS grew {growth} bytes over 20 cycles; one checkpoint is {size}"


def failing_loader(failures: int, error: type[BaseException] = torch.OutOfMemoryError
                   ) -> tuple[Callable[[CacheKey, str], Any], list[str]]:
    calls: list[str] = []

    def load(key: CacheKey, device: str) -> Any:
        calls.append(key.location)
        if key.location.endswith("sd-3") and sum(c.endswith("sd-3") for c in calls) <= failures:
            raise error("CUDA out of memory (injected)")
        return load_pipeline(key, device)
    return load, calls


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, MemoryError])
def test_out_of_memory_on_load_evicts_the_others_and_retries_once(copies: list[str],
                                                                 error: type[BaseException]) -> None:
    loader, calls = failing_loader(1, error)
    cache = PipelineCache("cpu", torch.float32, loader=loader)
    cache.get_key(cache.key(copies[0], None), *T2I)
    cache.get_key(cache.key(copies[1], None), *T2I)
    pipe = cache.get_key(cache.key(copies[3], None), *T2I)

    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert cache.stats().checkpoints == [copies[3]] and cache.stats().evictions == 2
    assert calls.count(copies[3]) == 2


def test_out_of_memory_twice_raises_and_the_cache_stays_usable(copies: list[str]) -> None:
    loader, calls = failing_loader(2)
    cache = PipelineCache("cpu", torch.float32, loader=loader)
    cache.get_key(cache.key(copies[0], None), *T2I)
    with pytest.raises(torch.OutOfMemoryError):
        cache.get_key(cache.key(copies[3], None), *T2I)
    assert calls.count(copies[3]) == 2 and cache.loading is None
    assert cache.get_key(cache.key(copies[3], None), *T2I) is not None  # third try: the injected errors are used up


def test_least_used_remembers_uses_across_evictions(copies: list[str]) -> None:
    """A popular checkpoint evicted once and reloaded keeps its count: the one-offs go first."""
    cache = PipelineCache("cpu", torch.float32, max_pipelines=2, policy="lfu")
    for location in (copies[0],) * 3 + (copies[1], copies[1], copies[2]):  # evicts copies[1] (2 < 3 uses)
        cache.get_key(cache.key(location, None), *T2I)
    assert sorted(cache.stats().checkpoints) == sorted([copies[0], copies[2]])
    cache.evict(cache.key(copies[0], None))
    cache.get_key(cache.key(copies[0], None), *T2I)  # reloaded: 4 uses in all
    cache.get_key(cache.key(copies[3], None), *T2I)  # evicts copies[2] (1 use), not the reloaded popular one
    assert sorted(cache.stats().checkpoints) == sorted([copies[0], copies[3]])
    assert cache.next_victim() == cache.key(copies[3], None)


def fleet_counts(client: redis.Redis, **times: int) -> Popularity:
    """Global popularity with requests counted, as the producers' routers count them."""
    popularity = Popularity(client, half_life_s=3600)
    for location, n in times.items():
        for _ in range(n):
            popularity.bump(SD, location)
    return popularity


def test_popular_policy_evicts_the_least_requested_fleet_wide(copies: list[str], redis_client: redis.Redis) -> None:
    """This worker ran copies[1] most, but the fleet asks for it least: it goes, not copies[0]."""
    popularity = fleet_counts(redis_client, **{copies[0]: 9, copies[1]: 2, copies[2]: 5})
    cache = PipelineCache("cpu", torch.float32, max_pipelines=2, policy="popular", counts=popularity.counts)
    for location in (copies[0], copies[1], copies[1], copies[1]):
        cache.get_key(cache.key(location, None, family=SD), *T2I)
    assert cache.next_victim() == cache.key(copies[1], None)
    cache.get_key(cache.key(copies[2], None, family=SD), *T2I)
    assert sorted(cache.stats().checkpoints) == sorted([copies[0], copies[2]])
    assert cache.next_victim() == cache.key(copies[2], None)  # 5 requests against 9
    for _ in range(5):  # the fleet's mix changes: read at each choice, the counts follow it
        popularity.bump(SD, copies[2])
    assert cache.next_victim() == cache.key(copies[0], None)


def test_popular_policy_without_counts_evicts_the_least_used_here(copies: list[str], redis_client: redis.Redis) -> None:
    """Checkpoints nobody counted (family-queue routing) tie at 0: this worker's own uses decide."""
    popularity = Popularity(redis_client)
    cache = PipelineCache("cpu", torch.float32, max_pipelines=2, policy="popular", counts=popularity.counts)
    for location in (copies[0], copies[0], copies[1], copies[2]):
        cache.get_key(cache.key(location, None, family=SD), *T2I)
    assert sorted(cache.stats().checkpoints) == sorted([copies[0], copies[2]])


def test_popular_policy_evicts_by_local_uses_while_redis_is_down(copies: list[str]) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    cache = PipelineCache("cpu", torch.float32, max_pipelines=2, policy="popular", counts=Popularity(dead).counts)
    for location in (copies[0], copies[0], copies[1], copies[2]):  # the third load must evict: copies[1]
        cache.get_key(cache.key(location, None, family=SD), *T2I)
    stats = cache.stats()
    assert sorted(stats.checkpoints) == sorted([copies[0], copies[2]])
    assert (stats.misses, stats.evictions) == (3, 1)
    assert cache.next_victim() == cache.key(copies[2], None)


def test_full_says_whether_one_more_load_would_evict(copies: list[str]) -> None:
    cache = PipelineCache("cpu", torch.float32, max_pipelines=2)
    assert not cache.full()
    cache.get_key(cache.key(copies[0], None), *T2I)
    assert not cache.full()
    cache.get_key(cache.key(copies[1], None), *T2I)
    assert cache.full()
    one = cache.stats().resident_bytes // 2
    by_memory = PipelineCache("cpu", torch.float32, budget_bytes=int(one * 2.5))
    by_memory.get_key(by_memory.key(copies[0], None), *T2I)
    assert not by_memory.full()  # room for another of the same size
    by_memory.get_key(by_memory.key(copies[1], None), *T2I)
    assert by_memory.full()
