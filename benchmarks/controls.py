"""Per-request controls on a hot pipeline: what a resident LoRA, an adapter switch, a cold adapter load and a
chosen scheduler cost, measured as paired differences in one process (tiny SD, CPU, fp32, one torch thread).

Targets (issue 13): a LoRA job with its adapter resident adds ≤ 5 ms over the same job without LoRA and loads
0 base parameter bytes; switching between two resident adapters job after job reloads nothing and adds ≤ 5 ms;
the cold adapter load is reported.

Each way runs on a hot pipeline of its own, always in the same state (a pipeline that never saw a LoRA, one
holding adapters a and b with none active, one with a active, one switching a and b job after job), so no way
pays for undoing another's state.  A comparison is a pair: its two ways run back to back in an order drawn
anew each round, and the figure is the median of the per-round differences, with its interquartile range and
a bootstrap 95% interval — the host's drift (this one is shared) hits both halves of a pair alike — in wall
time and in the process's CPU time, which leaves out the time a busy host makes the job wait for a core.  Two more
pipelines are built the way Diffusers leaves them (their execution device walked over every module on each
read, as before ``workers/pinned_device.py``) to show that change side by side, and one more holds the LoRA
with PEFT's own layer forward (as before ``workers/lora_fast.py``).  Then, apart: where the LoRA
time goes (device reads, PEFT's LoRA layers, ``set_adapters``/``enable_lora``/``disable_lora``) and the cold
adapter load.  Usage: ``python -m benchmarks.controls [--rounds 120] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from hotpipe.shared.checkpoints import fetch_hub_file, resolve
from hotpipe.shared.job import LoraRequest, SchedulerChoice, Task
from hotpipe.shared.loras import resolve_loras
from hotpipe.shared.spec import LoraSpec
from hotpipe.workers import lora_fast, memory, runner
from hotpipe.workers.adapters import Adapters
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.dev_checkpoints import make_checkpoints

SIDE = 64
PARAMS = {"prompt": "a red cube", "num_inference_steps": 4, "height": SIDE, "width": SIDE, "seed": 1}
EULER_A = SchedulerChoice(name="EulerAncestralDiscreteScheduler")
#: (what the figure says, way B, way A): each round's figure is B - A
PAIRS = (
    ("LoRA resident vs the same job, pipeline that never saw a LoRA", "LoRA resident", "never saw a LoRA"),
    ("LoRA resident vs no LoRA, pipeline holding adapters", "LoRA resident", "no LoRA, adapters resident"),
    ("no LoRA, adapters resident vs never saw a LoRA", "no LoRA, adapters resident", "never saw a LoRA"),
    ("switching a <-> b job after job vs the same LoRA", "switch a <-> b", "LoRA resident"),
    ("chosen scheduler (Euler a) vs the checkpoint's own", "chosen scheduler", "never saw a LoRA"),
    ("device walked (before): LoRA resident vs never saw a LoRA", "walked: LoRA resident", "walked: never saw a LoRA"),
    ("PEFT's forward (before): LoRA resident vs never saw a LoRA", "PEFT forward: LoRA resident", "never saw a LoRA"),
    ("lean vs PEFT's forward, LoRA resident", "LoRA resident", "PEFT forward: LoRA resident"),
)


def go_on(step: int, total: int) -> runner.Verdict:
    return runner.Verdict.GO_ON


@dataclass
class Bench:
    """The pipelines, adapters and LoRAs the ways run on."""

    root: Path
    a: LoraSpec
    b: LoraSpec
    pipes: dict[str, Any]
    adapters: dict[str, Adapters]
    caches: list[PipelineCache]


def job(pipe: Any, adapters: Adapters, loras: list[LoraSpec],
        scheduler: SchedulerChoice | None = None) -> tuple[float, float]:
    """One job's worker-side path from a warm pipeline: activate the adapters, run; (wall, CPU) seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    adapters.activate(pipe, loras)
    runner.run(pipe, PARAMS, {}, go_on, scheduler)
    return time.perf_counter() - wall, time.process_time() - cpu


def setup(root: Path) -> Bench:
    """Four hot pipelines from the worker's cache (one per state) and two built as Diffusers leaves them."""
    make_checkpoints(root, ["tiny-sd", "tiny-lora-sd", "tiny-lora-sd-b"])
    a, b = resolve_loras([LoraRequest(name="tiny-lora-sd"), LoraRequest(name="tiny-lora-sd-b")],
                         resolve("tiny-sd", Task.TEXT2IMAGE, root), root, (), fetch_hub_file, 4)
    caches, pipes = [], {}
    for name in ("never", "held", "lora", "switch", "peft lora"):
        cache = PipelineCache("cpu", torch.float32)
        caches.append(cache)
        pipes[name] = cache.get_key(cache.key(str(root / "tiny-sd"), None), Task.TEXT2IMAGE,
                                    "StableDiffusionPipeline")
    for name in ("walked never", "walked lora"):
        pipes[name] = DiffusionPipeline.from_pretrained(str(root / "tiny-sd"), dtype=torch.float32)
        pipes[name].set_progress_bar_config(disable=True)
    bench = Bench(root, a, b, pipes, {name: Adapters() for name in pipes}, caches)
    states: tuple[tuple[str, list[list[LoraSpec]]], ...] = (
        ("held", [[a], [b], []]), ("switch", [[a], [b]]), ("lora", [[a]]), ("walked lora", [[a]]),
        ("peft lora", [[a]]))
    for name, steps in states:  # load the adapters each state holds, ending in the state
        for loras in steps:
            job(pipes[name], bench.adapters[name], loras)
    for name in ("walked lora", "peft lora"):  # as before workers/lora_fast.py: PEFT's own layer forward
        lora_fast.uninstall(pipes[name])
    return bench


def ways(bench: Bench) -> dict[str, Callable[[], tuple[float, float]]]:
    """Each way: one job on its own pipeline, which it leaves in the state it found it (switch: a or b)."""
    p, ad, a, b = bench.pipes, bench.adapters, bench.a, bench.b
    turn = [0]

    def switch() -> tuple[float, float]:
        turn[0] += 1
        return job(p["switch"], ad["switch"], [a] if turn[0] % 2 else [b])

    return {
        "never saw a LoRA": lambda: job(p["never"], ad["never"], []),
        "no LoRA, adapters resident": lambda: job(p["held"], ad["held"], []),
        "LoRA resident": lambda: job(p["lora"], ad["lora"], [a]),
        "switch a <-> b": switch,
        "chosen scheduler": lambda: job(p["never"], ad["never"], [], EULER_A),
        "walked: never saw a LoRA": lambda: job(p["walked never"], ad["walked never"], []),
        "walked: LoRA resident": lambda: job(p["walked lora"], ad["walked lora"], [a]),
        "PEFT forward: LoRA resident": lambda: job(p["peft lora"], ad["peft lora"], [a]),
    }


def paired(run: dict[str, Callable[[], tuple[float, float]]], rounds: int,
           rng: random.Random) -> dict[str, list[tuple[float, float]]]:
    """Per pair, ``rounds`` differences B - A in ms (wall, CPU), each from one back-to-back run of both in a
    drawn order."""
    diffs: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in PAIRS}
    for _ in range(rounds):
        for label, way_b, way_a in PAIRS:
            order = [way_a, way_b]
            rng.shuffle(order)
            took = {way: run[way]() for way in order}
            (wall_b, cpu_b), (wall_a, cpu_a) = took[way_b], took[way_a]
            diffs[label].append(((wall_b - wall_a) * 1000, (cpu_b - cpu_a) * 1000))
    return diffs


def summary(values: list[float], rng: random.Random, resamples: int = 2000) -> tuple[float, float, float, float,
                                                                                     float]:
    """(median, 25th and 75th percentile, bootstrap 95% interval of the median)."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return statistics.median(values), q1, q3, medians[int(0.025 * resamples)], medians[int(0.975 * resamples)]


def device_reads(pipe: Any) -> tuple[int, float]:
    """How often one job reads ``_execution_device``, and what one read costs as Diffusers computes it (ms)."""
    cls, calls = type(pipe), [0]
    walk = DiffusionPipeline._execution_device.fget

    def counted(self: Any) -> Any:
        calls[0] += 1
        return walk(self)

    pipe.__class__ = type(cls.__name__, (cls,), {"_execution_device": property(counted)})
    try:
        runner.run(pipe, PARAMS, {}, go_on)
    finally:
        pipe.__class__ = cls
    return calls[0], min(timeit.repeat(lambda: walk(pipe), number=20, repeat=5)) / 20 * 1000


def lora_layers(pipe: Any) -> tuple[int, float, float, float]:
    """LoRA layers a job calls, and one call's cost (ms): lean forward, PEFT's forward, the wrapped layer alone."""
    from peft.tuners.lora.layer import LoraLayer

    calls = [0]
    layers: list[Any] = [m for m in pipe.unet.modules() if isinstance(m, LoraLayer)]
    hooks = [m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for m in layers]
    try:
        runner.run(pipe, PARAMS, {}, go_on)
    finally:
        for hook in hooks:
            hook.remove()
    layer = layers[0]
    tokens = (SIDE // 8) ** 2  # the first block's latent pixels
    x = torch.randn(2, tokens, int(layer.base_layer.in_features))  # the CFG batch
    with torch.no_grad():
        lean = min(timeit.repeat(lambda: lora_fast.lean_forward(layer, x), number=200, repeat=5)) / 200 * 1000
        peft = min(timeit.repeat(lambda: lora_fast.PEFT_FORWARD(layer, x), number=200, repeat=5)) / 200 * 1000
        base = min(timeit.repeat(lambda: layer.base_layer(x), number=200, repeat=5)) / 200 * 1000
    return calls[0], lean, peft, base


def switches(pipe: Any, a: LoraSpec) -> dict[str, float]:
    """What Diffusers' adapter switches cost apart (ms, median of 30), on a pipeline holding adapters."""
    out = {}
    for name, call in (("set_adapters", lambda: pipe.set_adapters([a.adapter], [1.0])),
                       ("enable_lora", pipe.enable_lora), ("disable_lora", pipe.disable_lora)):
        out[name] = statistics.median(timeit.repeat(call, number=1, repeat=30)) * 1000
    pipe.disable_lora()
    return out


def cold_loads(bench: Bench, n: int) -> list[float]:
    """Seconds of ``load_lora_weights`` + ``set_adapters`` for an adapter deleted just before."""
    pipe, adapters, out = bench.pipes["lora"], bench.adapters["lora"], []
    for _ in range(n):
        adapters.delete(pipe, bench.a.adapter)
        start = time.perf_counter()
        adapters.activate(pipe, [bench.a])
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=120)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    memory.settle()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        bench = setup(Path(tmp))
        run = ways(bench)
        for way in run.values():  # warm up: allocators and caches primed, every pipeline in its state
            way()
        misses = [cache.stats().misses for cache in bench.caches]
        loads = {name: ad.stats.loads for name, ad in bench.adapters.items()}
        diffs = paired(run, args.rounds, rng)
        reloads = sum(ad.stats.loads - loads[name] for name, ad in bench.adapters.items())
        base_loads = sum(c.stats().misses for c in bench.caches) - sum(misses)
        floor_ms = statistics.median(run["never saw a LoRA"]()[0] * 1000 for _ in range(10))
        report(diffs, rng, reloads, base_loads, floor_ms, args.rounds)
        breakdown(bench)
        cold = cold_loads(bench, 10)
        print(f"cold adapter load (load_lora_weights + set_adapters): median {statistics.median(cold) * 1000:.1f} ms,"
              f" min {min(cold) * 1000:.1f} ms over {len(cold)}; adapter {bench.a.name}")


def report(diffs: dict[str, list[tuple[float, float]]], rng: random.Random, reloads: int, base_loads: int,
           floor_ms: float, rounds: int) -> None:
    print(f"paired differences B - A, {rounds} rounds each, order drawn per round (tiny SD, 64x64, 4 steps, CPU, "
          f"1 thread); a job on a pipeline that never saw a LoRA takes ~{floor_ms:.1f} ms.  Wall time, and the "
          "process's CPU time (what a shared host's waits for a core leave out)")
    print(f"  {'comparison':62s} {'clock':5s} {'median':>8s} {'IQR':>17s} {'95% CI of median':>18s}")
    for label, values in diffs.items():
        for i, clock in enumerate(("wall", "cpu")):
            med, q1, q3, lo, hi = summary([v[i] for v in values], rng)
            print(f"  {label if i == 0 else '':62s} {clock:5s} {med:+7.2f}  [{q1:+6.2f}, {q3:+6.2f}]  "
                  f"[{lo:+6.2f}, {hi:+6.2f}]  ms")
    print(f"adapter reloads during all rounds (switching included): {reloads} (target 0); base checkpoint "
          f"loads: {base_loads} (0 base parameter bytes)")


def breakdown(bench: Bench) -> None:
    walked_never, never_ms = device_reads(bench.pipes["walked never"])
    walked_lora, lora_ms = device_reads(bench.pipes["walked lora"])
    print(f"_execution_device as Diffusers computes it: {walked_never} reads per job, {never_ms:.2f} ms a read "
          f"(never saw a LoRA), {lora_ms:.2f} ms a read with the LoRA ({walked_lora} reads); pinned: one dict "
          "lookup")
    calls, lean, peft, base = lora_layers(bench.pipes["lora"])
    print(f"LoRA layers: {calls} calls per job; one call (min of repeats) {lean * 1000:.0f} us lean, "
          f"{peft * 1000:.0f} us PEFT's forward, {base * 1000:.0f} us for the wrapped Linear alone -> "
          f"~{calls * (lean - base):.1f} ms per job lean, ~{calls * (peft - base):.1f} ms PEFT's")
    costs = switches(bench.pipes["held"], bench.a)
    print("adapter switches apart (median of 30): " + ", ".join(f"{k} {v:.2f} ms" for k, v in costs.items())
          + " (skipped when a job wants what the last one left active)")


if __name__ == "__main__":
    main()
