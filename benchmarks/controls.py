"""Per-request controls on a hot pipeline: what a resident LoRA, an adapter switch, a cold adapter load and a
chosen scheduler cost, measured side by side in one process (tiny SD, CPU, fp32, one torch thread).

Targets (issue 13): a LoRA job with its adapter resident adds ≤ 5 ms over the same job without LoRA and loads
0 base parameter bytes; switching between two resident adapters job after job reloads nothing and adds ≤ 5 ms;
the cold adapter load is reported.  Usage: ``python -m benchmarks.controls [--runs 40]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hotpipe.shared.checkpoints import fetch_hub_file, resolve
from hotpipe.shared.job import LoraRequest, SchedulerChoice, Task
from hotpipe.shared.loras import resolve_loras
from hotpipe.shared.spec import LoraSpec
from hotpipe.workers import memory, runner
from hotpipe.workers.adapters import Adapters
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.dev_checkpoints import make_checkpoints

PARAMS = {"prompt": "a red cube", "num_inference_steps": 4, "height": 64, "width": 64, "seed": 1}


def go_on(step: int, total: int) -> runner.Verdict:
    return runner.Verdict.GO_ON


def job(pipe: Any, adapters: Adapters, loras: list[LoraSpec], scheduler: SchedulerChoice | None = None) -> float:
    """One job's worker-side path from a warm pipeline: activate the adapters, run; seconds."""
    start = time.perf_counter()
    adapters.activate(pipe, loras)
    runner.run(pipe, PARAMS, {}, go_on, scheduler)
    return time.perf_counter() - start


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def alternate(runs: int, ways: dict[str, Callable[[int], float]]) -> dict[str, list[float]]:
    """Each way once per round, in turn, so the host's drift hits them alike."""
    out: dict[str, list[float]] = {name: [] for name in ways}
    for i in range(runs):
        for name, way in ways.items():
            out[name].append(way(i))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    memory.settle()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_checkpoints(root, ["tiny-sd", "tiny-lora-sd", "tiny-lora-sd-b"])
        a, b = resolve_loras([LoraRequest(name="tiny-lora-sd"), LoraRequest(name="tiny-lora-sd-b")],
                             resolve("tiny-sd", Task.TEXT2IMAGE, root), root, (), fetch_hub_file, 4)
        never_cache, cache = PipelineCache("cpu", torch.float32), PipelineCache("cpu", torch.float32)
        key = cache.key(str(root / "tiny-sd"), None)
        never = never_cache.get_key(never_cache.key(str(root / "tiny-sd"), None), Task.TEXT2IMAGE,
                                    "StableDiffusionPipeline")
        pipe = cache.get_key(key, Task.TEXT2IMAGE, "StableDiffusionPipeline")
        plain, adapters = Adapters(), Adapters()
        for loras in ([], [a], [b]):  # warm up: adapters resident, caches and allocators primed
            job(never, plain, [])
            job(pipe, adapters, loras)
        misses, base_bytes = cache.stats().misses, cache.stats().resident_bytes
        loads = adapters.stats.loads
        euler_a = SchedulerChoice(name="EulerAncestralDiscreteScheduler")
        times = alternate(args.runs, {
            "never saw a LoRA": lambda i: job(never, plain, []),
            "no LoRA, adapters resident": lambda i: job(pipe, adapters, []),
            "LoRA resident": lambda i: job(pipe, adapters, [a]),
            "switch a <-> b": lambda i: job(pipe, adapters, [a] if i % 2 else [b]),
            "chosen scheduler (Euler a)": lambda i: job(never, plain, [], euler_a),
        })
        reloads = adapters.stats.loads - loads
        cold = []
        for _ in range(max(5, args.runs // 4)):
            adapters.delete(pipe, a.adapter)
            start = time.perf_counter()
            adapters.activate(pipe, [a])
            cold.append(time.perf_counter() - start)
        report(times, cold, reloads, cache.stats().misses - misses, base_bytes, adapters, a)


def report(times: dict[str, list[float]], cold: list[float], reloads: int, base_loads: int, base_bytes: int | None,
           adapters: Adapters, a: LoraSpec) -> None:
    floor = ms(times["never saw a LoRA"])
    print(f"medians of {len(times['never saw a LoRA'])} alternating runs (tiny SD, 64x64, 4 steps, CPU, 1 thread)")
    for name, values in times.items():
        print(f"  {name:30s} {ms(values):8.2f} ms   {ms(values) - floor:+7.2f} ms vs never saw a LoRA")
    lora, none = ms(times["LoRA resident"]), ms(times["no LoRA, adapters resident"])
    print(f"LoRA resident vs no LoRA on the same pipeline: {lora - none:+.2f} ms (target <= 5 ms)")
    print(f"switch vs LoRA resident: {ms(times['switch a <-> b']) - lora:+.2f} ms, adapter reloads while "
          f"switching: {reloads} (target 0)")
    print(f"base checkpoint loads during LoRA jobs: {base_loads} (0 base parameter bytes loaded; resident "
          f"base bytes {base_bytes})")
    print(f"cold adapter load (load_lora_weights + set_adapters): median {ms(cold):.1f} ms, "
          f"min {min(cold) * 1000:.1f} ms over {len(cold)}; adapter {a.name}")


if __name__ == "__main__":
    main()
