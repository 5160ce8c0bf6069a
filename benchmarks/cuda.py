"""The worker's CUDA path on a real GPU: fp16 weights, device pinning, memory, batching.

Builds, offline, a checkpoint with Stable Diffusion 1.5's *architecture* (full-size UNet,
VAE and CLIP-L text encoder, random weights, saved as fp16 safetensors) and drives it through
the worker's own cache and runner on ``--device`` (default ``cuda:0``):

- cold load time; bytes on the GPU after load vs the parameters' bytes (fp16 = 2 bytes each);
- every parameter on the pinned device in fp16;
- text2image at 512x512 (20 steps) with 1 and 4 images per call: seconds per image, peak memory;
- task switch (image2image, inpainting) time and GPU memory growth (target: none);
- eviction: after dropping the cache, ``gc.collect()`` and ``empty_cache()``, allocated bytes
  return to the baseline;
- every tiny dev checkpoint, text2image in fp16, to catch dtype/device bugs per family;
- the memory budget on the GPU: two such checkpoints under a budget that holds one, loaded in
  turn 10 times (each load evicts the other; allocated bytes never exceed one checkpoint's);
- a real CUDA out-of-memory: with the process capped (``set_per_process_memory_fraction``)
  below two checkpoints and no budget, the second load runs out of memory, the cache evicts
  the first and retries once, and the load succeeds.

Prints JSON and writes it to ``--out``.  Usage (on a GPU machine):
``python -m benchmarks.cuda --out cuda.json``.  Not a test: CI has no GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from benchmarks.cache import TASKS, parameter_bytes
from hotpipe.shared.checkpoints import resolve
from hotpipe.shared.job import Task
from hotpipe.workers import runner
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.dev_checkpoints import BUILDERS, make_checkpoints, write_clip_tokenizer

MIB = 2**20


def build_sd15_shape(out: Path, seed: int = 0) -> int:
    """SD 1.5's architecture with random weights, fp16 safetensors; returns the parameter count."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with torch.device("cuda"):  # random init on the GPU: seconds instead of a minute of CPU
        unet: Any = UNet2DConditionModel(
            sample_size=64, cross_attention_dim=768, attention_head_dim=8,
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae: Any = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
        )
        text: Any = CLIPTextModel(CLIPTextConfig(
            vocab_size=514, bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=768,
            intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
        ))
    pipe: Any = StableDiffusionPipeline(
        unet=unet.half(), vae=vae.half(), text_encoder=text.half(), tokenizer=write_clip_tokenizer(out / "tokenizer"),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    count: int = sum(p.numel() for m in (unet, vae, text) for p in m.parameters())
    del pipe, unet, vae, text
    gc.collect()
    torch.cuda.empty_cache()
    return count


def synced(fn: Any) -> tuple[float, Any]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, value


def no_stop(step: int, total: int) -> runner.Verdict:
    return runner.Verdict.GO_ON


def generate(pipe: Any, size: int, steps: int, n: int, inputs: dict[str, Any] | None = None) -> list[Any]:
    params = {"prompt": "a red fox in the snow", "num_inference_steps": steps, "guidance_scale": 7.5,
              "height": size, "width": size, "num_images": n, "seed": 1}
    if inputs:
        params = {k: v for k, v in params.items() if k not in ("height", "width")} | {"strength": 0.75}
    return runner.run(pipe, params, inputs or {}, no_stop)


def placement(pipe: Any) -> dict[str, Any]:
    devices: set[str] = set()
    dtypes: set[str] = set()
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            for p in module.parameters():
                devices.add(str(p.device))
                dtypes.add(str(p.dtype))
    return {"devices": sorted(devices), "dtypes": sorted(dtypes)}


def big_checkpoint(root: Path, device: str, size: int, steps: int, rounds: int) -> dict[str, Any]:
    location = root / "sd15-shape"
    took_build, count = synced(lambda: build_sd15_shape(location))
    base = torch.cuda.memory_allocated()
    report = {"parameters": count, "build_s": round(took_build, 1),
              "safetensors_mib": round(sum(f.stat().st_size for f in location.rglob("*.safetensors")) / MIB, 1)}
    report |= exercise(location, device, size, steps, rounds, base)
    gc.collect()  # the cache and every pipeline went out of scope with exercise()
    torch.cuda.empty_cache()
    report["after_evict_gpu_mib_above_baseline"] = round((torch.cuda.memory_allocated() - base) / MIB, 2)
    return report


def exercise(location: Path, device: str, size: int, steps: int, rounds: int, base: int) -> dict[str, Any]:
    cache = PipelineCache(device, torch.float16)
    cold, t2i = synced(lambda: cache.get_key(cache.key(str(location), None), *TASKS[0]))
    loaded = torch.cuda.memory_allocated() - base
    report: dict[str, Any] = {
        "cold_load_s": round(cold, 2), "gpu_mib_after_load": round(loaded / MIB, 1),
        "parameter_mib": round(parameter_bytes([t2i]) / MIB, 1), "placement": placement(t2i),
    }
    generate(t2i, size, 2, 1)  # warm-up: cuDNN autotuning, allocator
    for n in (1, 4):
        torch.cuda.reset_peak_memory_stats()
        runs = [synced(lambda n=n: generate(t2i, size, steps, n)) for _ in range(rounds)]
        best = min(t for t, _ in runs)
        images = runs[0][1]
        report[f"t2i_batch{n}"] = {
            "images": len(images), "size": list(images[0].size), "best_s": round(best, 3),
            "s_per_image": round(best / n, 3), "it_per_s": round(steps / best, 1),
            "peak_mib_above_weights": round((torch.cuda.max_memory_allocated() - base - loaded) / MIB, 1),
        }
    before = torch.cuda.memory_allocated()
    switch = {}
    for task, name in TASKS[1:]:
        took, _ = synced(lambda t=task, n=name: cache.get_key(cache.key(str(location), None), t, n))
        switch[name] = round(took * 1000, 2)
    report["switch_ms"] = switch
    report["switch_gpu_growth_bytes"] = torch.cuda.memory_allocated() - before
    siblings = [cache.get_key(cache.key(str(location), None), t, n) for t, n in TASKS]
    report["parameter_mib_three_tasks"] = round(parameter_bytes(siblings) / MIB, 1)
    image = generate(t2i, size, 4, 1)[0]
    mask = image.convert("L").point(lambda v: 255 if v > 127 else 0)
    i2i = generate(siblings[1], size, steps, 1, {"image": image})
    inp = generate(siblings[2], size, steps, 1, {"image": image, "mask_image": mask})
    report["i2i_inpaint_sizes"] = [list(i2i[0].size), list(inp[0].size)]
    return report


def budget_and_oom(root: Path, device: str) -> dict[str, Any]:
    """Eviction under a GPU budget, and the out-of-memory retry, on two SD-1.5-sized checkpoints."""
    a, b = root / "sd15-shape", root / "sd15-shape-b"
    build_sd15_shape(b, seed=1)
    base = torch.cuda.memory_allocated()
    report: dict[str, Any] = {"budget_3000_mib": budget_loop(a, b, device, base)}
    gc.collect()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    cap = torch.cuda.memory_allocated() + 3000 * MIB  # room for one checkpoint, not two
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        report["oom_retry"] = {"cap_mib": round(cap / MIB), **oom_retry(a, b, device)}
    except Exception as exc:
        report["oom_retry"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    gc.collect()
    torch.cuda.empty_cache()
    report["after_all_gpu_mib_above_baseline"] = round((torch.cuda.memory_allocated() - base) / MIB, 2)
    return report


def budget_loop(a: Path, b: Path, device: str, base: int) -> dict[str, Any]:
    cache = PipelineCache(device, torch.float16, budget_bytes=3000 * MIB)
    peaks = []
    for i in range(10):
        cache.get_key(cache.key(str(a if i % 2 == 0 else b), None), *TASKS[0])
        peaks.append(torch.cuda.memory_allocated() - base)
    stats = cache.stats()
    return {"loads": stats.misses, "evictions": stats.evictions, "resident": stats.checkpoints,
            "resident_mib_measured": round(stats.resident_bytes / MIB, 1),
            "max_allocated_mib_after_a_load": round(max(peaks) / MIB, 1)}


def oom_retry(a: Path, b: Path, device: str) -> dict[str, Any]:
    cache = PipelineCache(device, torch.float16)
    cache.get_key(cache.key(str(a), None), *TASKS[0])
    took, pipe = synced(lambda: cache.get_key(cache.key(str(b), None), *TASKS[0]))
    images = generate(pipe, 512, 4, 1)
    stats = cache.stats()
    return {"second_load_s": round(took, 2), "evictions": stats.evictions, "resident": stats.checkpoints,
            "ran_after_retry": len(images)}


def metrics_check(device: str) -> dict[str, Any]:
    """The worker's GPU memory metrics around a job that allocates 256 MiB on ``device``."""
    from prometheus_client import CollectorRegistry

    from hotpipe.workers.metrics import WorkerMetrics

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, device)
    metrics.job_started()
    held = torch.empty(256 * MIB, dtype=torch.uint8, device=device)
    metrics.job_finished("stable-diffusion", "succeeded", 1.0)
    del held
    read = {kind: registry.get_sample_value("hotpipe_gpu_memory_bytes", {"device": device, "kind": kind})
            for kind in ("allocated", "reserved", "peak")}
    total = registry.get_sample_value("hotpipe_gpu_memory_total_bytes", {"device": device})
    return {f"{k}_mib": None if v is None else round(v / MIB, 1) for k, v in read.items()} | {
        "total_mib": None if total is None else round(total / MIB)}


def tiny_checkpoints(root: Path, device: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    # ControlNet models and Kandinsky's decoder/prior pairs are built into pipelines by the job's
    # spec (workers/hotpipe/workers/loading.py), not runnable on their own: the e2e tests cover them
    names = sorted(n for n in BUILDERS if "controlnet" not in n and "kandinsky" not in n)
    for location in make_checkpoints(root / "tiny", names):
        cache = PipelineCache(device, torch.float16)
        try:
            refiner = "refiner" in location.name  # image2image only
            task = Task.IMAGE2IMAGE if refiner else Task.TEXT2IMAGE
            spec = resolve(location.name, task, location.parent)
            pipe = cache.get_key(cache.key(str(location), None), task, spec.pipeline)
            params = {"prompt": "a fox", "num_inference_steps": 4, "seed": 0, "num_images": 2}
            inputs = {"image": Image.new("RGB", (64, 64), (200, 80, 40))} if refiner else {}
            images = runner.run(pipe, params, inputs, no_stop)
            results[location.name] = {"ok": True, "class": type(pipe).__name__, "images": len(images),
                                      "placement": placement(pipe)}
        except Exception as exc:  # report every family, don't stop at the first
            results[location.name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        del cache
        gc.collect()
        torch.cuda.empty_cache()
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--parts", default="tiny,big,metrics", help="comma-separated: tiny, big (incl. budget, OOM), "
                                                                "metrics")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    torch.backends.cuda.matmul.allow_tf32 = True
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        if "tiny" in parts:
            report["tiny"] = tiny_checkpoints(Path(tmp), args.device)
        if "big" in parts:
            report["sd15_shape"] = big_checkpoint(Path(tmp), args.device, args.size, args.steps, args.rounds)
            report["budget_and_oom"] = budget_and_oom(Path(tmp), args.device)
    if "metrics" in parts:
        report["worker_gpu_metrics"] = metrics_check(args.device)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
