"""The README's first command: a local stack and the three tasks, end to end over HTTP.

text2image -> image2image on that result -> inpainting on it with a generated mask;
images are downloaded through their presigned URLs and a short summary is printed.
"""

from __future__ import annotations

import base64
import io
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.job import JobRecord
from hotpipe.shared.status import Status

CHECKPOINT = "tiny-sd"
LORA = "tiny-lora-sd"
SIZE = 64


def _ensure_checkpoints(models: Path) -> None:
    if not ((models / CHECKPOINT / "model_index.json").is_file()
            and (models / LORA / "pytorch_lora_weights.safetensors").is_file()):
        print(f"building tiny checkpoints in {models} ...", flush=True)
        subprocess.run([sys.executable, "-m", "hotpipe", "dev", "make-checkpoints", str(models)], check=True)


def _stack(models: Path, workdir: Path, redis: str) -> LocalStack:
    if redis.startswith("redis://"):
        return LocalStack(workdir, models, redis_url=redis)
    return LocalStack(workdir, models, redis_binary=find_redis_server(redis))


def _png_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _run(client: Client, body: dict[str, Any], out: Path, name: str) -> tuple[JobRecord, Path, float]:
    start = time.perf_counter()
    record = client.wait(client.submit(body).id, timeout_s=300)
    took = time.perf_counter() - start
    if record.status is not Status.SUCCEEDED or not record.result:
        raise RuntimeError(f"{name} ended {record.status.value}: {record.error}")
    path = out / f"{name}.png"
    path.write_bytes(client.download(record.result.images[0].url or ""))
    return record, path, took


def run_demo(out: Path, models: Path, workdir: Path, redis: str) -> int:
    _ensure_checkpoints(models)
    out.mkdir(parents=True, exist_ok=True)
    params = {"prompt": "a lighthouse at dawn", "num_inference_steps": 4, "seed": 7}
    print("starting the local stack (redis, s3, api, worker) ...", flush=True)
    with _stack(models, workdir, redis) as stack, Client(stack.api_url) as client:
        print(f"API at {stack.api_url} (docs: {stack.api_url}/docs)")
        jobs = []
        t2i = _run(client, {"checkpoint": CHECKPOINT, "task": "text2image",
                            "params": {**params, "height": SIZE, "width": SIZE}}, out, "1-text2image")
        jobs.append(t2i)
        source = Image.open(t2i[1]).convert("RGB")
        i2i = {"checkpoint": CHECKPOINT, "task": "image2image", "params": {**params, "strength": 0.6},
               "inputs": {"image": _png_uri(source)}}
        jobs.append(_run(client, i2i, out, "2-image2image"))
        mask = Image.new("L", source.size, 0)
        ImageDraw.Draw(mask).rectangle((SIZE // 4, SIZE // 4, 3 * SIZE // 4, 3 * SIZE // 4), fill=255)
        jobs.append(_run(client, {"checkpoint": CHECKPOINT, "task": "inpainting", "params": params,
                                  "inputs": {"image": _png_uri(Image.open(jobs[1][1])), "mask_image": _png_uri(mask)}},
                         out, "3-inpainting"))
        t2i_body = {"checkpoint": CHECKPOINT, "task": "text2image", "params": {**params, "height": SIZE, "width": SIZE}}
        jobs.append(_run(client, {**t2i_body, "scheduler": "DPM++ 2M Karras"}, out, "4-scheduler"))
        jobs.append(_run(client, {**t2i_body, "loras": [{"name": LORA, "scale": 0.8}]}, out, "5-lora"))
        print(f"\n{'task':<12} {'pipeline':<32} {'controls':<34} {'status':<10} {'secs':>6}  image")
        for record, path, took in jobs:
            controls = (f"scheduler {record.scheduler.sampler or record.scheduler.name}" if record.scheduler else
                        ", ".join(f"lora {lo.name}:{lo.scale:g}" for lo in record.loras or []))
            print(f"{record.task.value:<12} {record.pipeline:<32} {controls or '-':<34} {record.status.value:<10} "
                  f"{took:6.2f}  {path}")
    return 0


def serve_stack(models: Path, workdir: Path, redis: str) -> int:
    _ensure_checkpoints(models)
    stop = {signal.SIGINT, signal.SIGTERM}
    with _stack(models, workdir, redis) as stack:
        # Blocked only now: children inherit the signal mask, and they must see SIGTERM.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        env_file = stack.write_env_file(stack.workdir / "stack.env")
        print(stack_banner(stack, env_file), flush=True)
        signal.sigwait(stop)
        print("stopping ...", flush=True)
    return 0


def stack_banner(stack: LocalStack, env_file: Path) -> str:
    """Every address of the running stack, and the env file that holds them."""
    s = stack.settings
    lines = [f"API:      {stack.api_url} (docs: {stack.api_url}/docs, {stack.api_url}/redoc)",
             f"Redis:    {s.redis_url}",
             f"S3:       {s.s3_endpoint_url} bucket {s.s3_bucket}, prefix {s.s3_prefix}",
             *(f"metrics:  {stack.metrics_url(name)} ({name})" for name in stack.metrics_ports),
             f"models:   {s.model_root}",
             f"logs:     {stack.workdir}",
             f"env file: {env_file} (load it in a shell: source {env_file})",
             "Ctrl-C to stop"]
    return "\n".join(lines)
