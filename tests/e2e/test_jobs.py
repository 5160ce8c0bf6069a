"""End to end over HTTP: real redis-server, S3 server, API process and Celery worker process."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hotpipe.devstack import LocalStack
from hotpipe.producer.client import Client
from hotpipe.shared.job import JobRecord
from hotpipe.shared.status import Status
from tests.e2e.polling import wait_for

pytestmark = pytest.mark.e2e
SIZE = 64


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Client:
    return Client(stack.api_url)


def t2i(seed: int = 1, **params: Any) -> dict[str, Any]:
    return {"checkpoint": "tiny-sd", "task": "text2image",
            "params": {"prompt": "a red cube", "num_inference_steps": 3, "height": SIZE, "width": SIZE,
                       "seed": seed, **params}}


def png_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def run(client: Client, body: dict[str, Any]) -> JobRecord:
    submitted = client.submit(body)
    assert submitted.status is Status.QUEUED
    return client.wait(submitted.id, timeout_s=120)


def pixels(client: Client, record: JobRecord, index: int = 0) -> np.ndarray:
    assert record.result is not None
    return np.asarray(Image.open(io.BytesIO(client.download(record.result.images[index].url or ""))))


def test_text2image_transitions_objects_and_sidecar(client: Client, stack: LocalStack) -> None:
    record = run(client, t2i(seed=11))

    assert record.status is Status.SUCCEEDED, record.error
    assert (record.family, record.pipeline, record.attempts) == ("stable-diffusion", "StableDiffusionPipeline", 1)
    assert record.created_at <= record.started_at <= record.finished_at  # type: ignore[operator]
    assert record.progress is not None and record.progress.step == record.progress.total == 3
    assert record.result is not None and len(record.result.images) == 1
    image = record.result.images[0]
    assert image.key == f"jobs/{record.id}/0.png"
    storage = stack.storage()
    data = storage.get(image.key)
    assert hashlib.sha256(data).hexdigest() == image.sha256
    png = Image.open(io.BytesIO(data))
    assert (png.format, png.size, image.width, image.height) == ("PNG", (SIZE, SIZE), SIZE, SIZE)
    embedded = json.loads(png.text["parameters"])  # type: ignore[attr-defined]
    assert (embedded["seed"], embedded["pipeline"], embedded["prompt"]) == (11, "StableDiffusionPipeline", "a red cube")
    sidecar = json.loads(storage.get(f"jobs/{record.id}/job.json"))
    prov = sidecar["provenance"]
    assert (prov["checkpoint"], prov["pipeline"], prov["seed"], prov["source"]) == (
        "tiny-sd", "StableDiffusionPipeline", 11, "local")
    assert {"diffusers", "torch", "transformers", "hotpipe"} <= set(prov["versions"])
    assert sidecar["params"]["num_inference_steps"] == 3
    assert client.download(image.url or "") == data


def test_same_seed_same_pixels_other_seed_differs(client: Client) -> None:
    first, again, other = (run(client, t2i(seed=s)) for s in (5, 5, 6))
    assert all(r.status is Status.SUCCEEDED for r in (first, again, other))
    assert np.array_equal(pixels(client, first), pixels(client, again))
    assert not np.array_equal(pixels(client, first), pixels(client, other))


def test_image2image_then_inpainting(client: Client) -> None:
    source = Image.fromarray(pixels(client, run(client, t2i(seed=3))))
    i2i = run(client, {"checkpoint": "tiny-sd", "task": "image2image", "inputs": {"image": png_uri(source)},
                       "params": {"prompt": "x", "num_inference_steps": 4, "strength": 0.5, "seed": 1}})
    assert (i2i.status, i2i.pipeline) == (Status.SUCCEEDED, "StableDiffusionImg2ImgPipeline"), i2i.error
    mask = Image.new("L", source.size, 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 48, 48), fill=255)
    inpaint = run(client, {"checkpoint": "tiny-sd", "task": "inpainting",
                           "inputs": {"image": png_uri(source), "mask_image": png_uri(mask)},
                           "params": {"prompt": "x", "num_inference_steps": 3, "seed": 1}})
    assert (inpaint.status, inpaint.pipeline) == (Status.SUCCEEDED, "StableDiffusionInpaintPipeline"), inpaint.error
    assert pixels(client, inpaint).shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize(("fmt", "pil_format"), [("webp", "WEBP"), ("jpeg", "JPEG")])
def test_output_formats_embed_parameters(client: Client, stack: LocalStack, fmt: str, pil_format: str) -> None:
    record = run(client, {**t2i(seed=2), "output_format": fmt})
    assert record.status is Status.SUCCEEDED and record.result
    image = record.result.images[0]
    assert (image.key.endswith(f".{fmt}"), image.content_type) == (True, f"image/{fmt}")
    decoded = Image.open(io.BytesIO(stack.storage().get(image.key)))
    assert decoded.format == pil_format
    assert json.loads(decoded.getexif()[0x010E])["seed"] == 2


def test_several_images_get_deterministic_keys(client: Client) -> None:
    record = run(client, t2i(seed=4, num_images=2))
    assert record.result is not None
    assert [i.key for i in record.result.images] == [f"jobs/{record.id}/0.png", f"jobs/{record.id}/1.png"]
    assert not np.array_equal(pixels(client, record, 0), pixels(client, record, 1))


def test_cancel_running_and_queued(client: Client, stack: LocalStack) -> None:
    slow = client.submit(t2i(seed=9, num_inference_steps=150, height=256, width=256))
    behind = client.submit(t2i(seed=10))
    wait_for(lambda: (r := client.get(slow.id)).status is Status.RUNNING and r.progress)

    assert client.cancel(behind.id).status is Status.CANCELED  # still queued behind the slow one
    client.cancel(slow.id)
    slow_done = client.wait(slow.id, timeout_s=60)
    assert slow_done.status is Status.CANCELED and slow_done.result is None
    assert slow_done.progress is not None and slow_done.progress.step < 150
    assert not stack.storage().exists(f"jobs/{slow.id}/0.png")
    # the queued job's message is consumed without running it
    after = run(client, t2i(seed=12))
    assert after.status is Status.SUCCEEDED
    behind_done = client.get(behind.id)
    assert (behind_done.status, behind_done.attempts, behind_done.started_at) == (Status.CANCELED, 0, None)
    assert not stack.storage().exists(f"jobs/{behind.id}/0.png")


def test_broken_checkpoint_fails_with_code(client: Client, stack: LocalStack) -> None:
    root = stack.settings.model_root
    broken = root / "tiny-sd-broken"
    if not broken.exists():
        shutil.copytree(root / "tiny-sd", broken)
        (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    record = run(client, {**t2i(), "checkpoint": "tiny-sd-broken"})
    assert record.status is Status.FAILED
    assert record.error is not None and record.error.code and record.error.message
    assert record.finished_at is not None and record.result is None


def test_cli_submit_waits_and_downloads(stack: LocalStack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "hotpipe", "submit", "--api", stack.api_url, "--checkpoint", "tiny-sd",
         "--prompt", "a boat", "--steps", "2", "--height", "64", "--width", "64", "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("*.png"))
    assert len(files) == 1 and Image.open(files[0]).size == (64, 64)
    assert "succeeded" in proc.stderr


def test_cli_submit_reports_caller_errors(stack: LocalStack) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hotpipe", "submit", "--api", stack.api_url, "--checkpoint", "../etc",
         "--prompt", "x"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "field checkpoint" in proc.stderr


def test_event_stream_reports_progress_to_the_end(client: Client) -> None:
    job = client.submit(t2i(seed=21, num_inference_steps=4))
    events = list(client.events(job.id, timeout_s=120))
    names = [name for name, _ in events]
    assert names[0] == "status" and events[0][1].status in (Status.QUEUED, Status.RUNNING)
    final = events[-1][1]
    assert final.status is Status.SUCCEEDED and final.result and final.result.images[0].url
    steps = [r.progress.step for name, r in events if name == "progress" and r.progress]
    assert steps and steps == sorted(steps) and steps[-1] == 4


def hotpipe(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotpipe", *argv], capture_output=True, text=True, timeout=300)


def test_cli_batch_from_jsonl(stack: LocalStack, tmp_path: Path) -> None:
    lines = [{"params": {"prompt": f"boat {i}", "seed": i}} for i in range(3)]
    lines.append({"params": {"prompt": "bad", "num_inference_steps": 0}})
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "out"
    proc = hotpipe("submit", "--api", stack.api_url, "--checkpoint", "tiny-sd", "--steps", "2", "--height", "64",
                   "--width", "64", "--from", str(jobs), "--concurrency", "2", "--out", str(out), "--json")
    assert proc.returncode == 2, proc.stderr  # one line was refused, the others ran
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r.get("status") for r in results[:3]] == ["succeeded"] * 3
    assert results[3]["error"]["field"] == "params.num_inference_steps"
    assert len(list(out.glob("*.png"))) == 3


def test_cli_status_and_cancel(stack: LocalStack, client: Client) -> None:
    record = run(client, t2i(seed=31))
    status = hotpipe("status", record.id, "--api", stack.api_url)
    assert status.returncode == 0 and f"{record.id} succeeded" in status.stdout
    as_json = json.loads(hotpipe("status", record.id, "--api", stack.api_url, "--json").stdout)
    assert as_json["id"] == record.id and as_json["result"]["images"][0]["url"]
    cancel = hotpipe("cancel", record.id, "--api", stack.api_url)
    assert cancel.returncode == 2 and "already succeeded" in cancel.stderr


def test_high_priority_overtakes_a_backlog(client: Client) -> None:
    blocker = client.submit(t2i(seed=40, num_inference_steps=60, height=128, width=128))
    wait_for(lambda: client.get(blocker.id).status is Status.RUNNING)
    backlog = [client.submit({**t2i(seed=41 + i), "priority": 0}) for i in range(4)]
    urgent = client.submit({**t2i(seed=50), "priority": 9})
    done = {job.id: client.wait(job.id, timeout_s=600) for job in [blocker, *backlog, urgent]}
    assert [r.status for r in done.values()] == [Status.SUCCEEDED] * 6
    order = sorted(done.values(), key=lambda r: r.started_at or r.created_at)
    assert [r.id for r in order[:2]] == [blocker.id, urgent.id], [(r.id[:6], r.started_at) for r in order]
