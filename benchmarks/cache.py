"""Hot cache: cold load vs warm hit vs task switch on one checkpoint, and the bytes they hold.

Targets (issue 7): a warm job does no load; a task switch (``from_pipe``) takes ≤ 5 ms;
the parameter bytes held for three tasks equal those for one.
Usage: ``python -m benchmarks.cache [--rounds 10]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hotpipe.shared.job import Task
from hotpipe.workers import memory
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.dev_checkpoints import make_checkpoints

TASKS = [(Task.TEXT2IMAGE, "StableDiffusionPipeline"), (Task.IMAGE2IMAGE, "StableDiffusionImg2ImgPipeline"),
         (Task.INPAINTING, "StableDiffusionInpaintPipeline")]


def parameter_bytes(pipes: list[Any]) -> int:
    """Bytes of the unique tensor storages behind every parameter the pipelines hold."""
    seen: dict[int, int] = {}
    for pipe in pipes:
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                for p in module.parameters():
                    storage = p.untyped_storage()
                    seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    memory.settle()  # as a worker does after its imports
    with tempfile.TemporaryDirectory() as tmp:
        location = str(make_checkpoints(Path(tmp), ["tiny-sd"])[0])
        cold, warm, switch, evict, loads_on_warm = [], [], [], [], 0
        one = three = measured_one = measured_three = 0
        for _ in range(args.rounds):
            cache = PipelineCache("cpu", torch.float32)
            took, t2i = timed(lambda c=cache: c.get_key(c.key(location, None), *TASKS[0]))
            cold.append(took)
            misses = cache.stats().misses
            warm.append(timed(lambda c=cache: c.get_key(c.key(location, None), *TASKS[0]))[0])
            loads_on_warm += cache.stats().misses - misses
            switch.append(timed(lambda c=cache: c.get_key(c.key(location, None), *TASKS[1]))[0])
            measured_one = cache.stats().resident_bytes
            key = cache.key(location, None)
            inpaint = cache.get_key(key, *TASKS[2])
            measured_three = cache.stats().resident_bytes
            one, three = parameter_bytes([t2i]), parameter_bytes([t2i, cache.get_key(key, *TASKS[1]), inpaint])
            del t2i, inpaint
            evict.append(timed(cache.evict_others)[0])
    ms = {name: statistics.median(v) * 1e3
          for name, v in (("cold", cold), ("warm", warm), ("switch", switch), ("evict", evict))}
    print(f"rounds={args.rounds}, tiny SD on CPU, fp32 (medians)")
    print(f"cold load (from_pretrained)  {ms['cold']:9.2f} ms")
    print(f"warm hit                     {ms['warm']:9.4f} ms   loads during warm hits: {loads_on_warm}")
    print(f"task switch (from_pipe)      {ms['switch']:9.2f} ms   target <= 5 ms")
    print(f"eviction (drop + gc.collect)  {ms['evict']:9.2f} ms")
    print(f"parameter bytes: one task {one}, three tasks {three}  ({'equal' if one == three else 'DIFFERENT'})")
    print(f"cache.stats().resident_bytes (parameters + buffers): one task {measured_one}, "
          f"three tasks {measured_three}")


if __name__ == "__main__":
    main()
