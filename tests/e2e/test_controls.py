"""Per-request generation controls end to end: real API and Celery worker processes, real tiny pipelines."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hotpipe.devstack import LocalStack
from hotpipe.producer.client import Client
from hotpipe.producer.client_errors import InvalidRequestError
from hotpipe.shared.job import JobRecord, JobRequest
from hotpipe.shared.status import Status

pytestmark = pytest.mark.e2e
SIZE = 64


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Client:
    return Client(stack.api_url)


def t2i(seed: int = 1, **fields: Any) -> dict[str, Any]:
    return {"checkpoint": "tiny-sd", "task": "text2image",
            "params": {"prompt": "a red cube", "num_inference_steps": 4, "height": SIZE, "width": SIZE,
                       "seed": seed}, **fields}


def run(client: Client, body: dict[str, Any] | JobRequest) -> JobRecord:
    record = client.wait(client.submit(body).id, timeout_s=120)
    assert record.status is Status.SUCCEEDED, record.error
    return record


def pixels(client: Client, record: JobRecord) -> np.ndarray:
    assert record.result is not None
    return np.asarray(Image.open(io.BytesIO(client.download(record.result.images[0].url or ""))))


def test_a_chosen_scheduler_runs_is_recorded_and_leaves_the_hot_pipeline_as_it_was(
        client: Client, stack: LocalStack) -> None:
    before = run(client, t2i(seed=21))
    chosen = run(client, JobRequest.model_validate(t2i(seed=21, scheduler="Euler a",
                                                       scheduler_config={"timestep_spacing": "trailing"})))
    after = run(client, t2i(seed=21))

    assert chosen.scheduler is not None
    assert (chosen.scheduler.name, chosen.scheduler.sampler, chosen.scheduler.config) == (
        "EulerAncestralDiscreteScheduler", "Euler a", {"timestep_spacing": "trailing"})
    assert not np.array_equal(pixels(client, before), pixels(client, chosen))
    assert np.array_equal(pixels(client, before), pixels(client, after))
    storage = stack.storage()
    sidecar = json.loads(storage.get(f"jobs/{chosen.id}/job.json"))
    assert sidecar["provenance"]["scheduler"] == {"name": "EulerAncestralDiscreteScheduler",
                                                  "config": {"timestep_spacing": "trailing"}, "sampler": "Euler a"}
    own = json.loads(storage.get(f"jobs/{after.id}/job.json"))["provenance"]["scheduler"]
    assert own == {"name": "DDIMScheduler", "config": {}, "sampler": None}  # tiny-sd's own


def test_an_incompatible_scheduler_is_refused_naming_the_compatible_ones(client: Client) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        client.submit(t2i(scheduler="FlowMatchEulerDiscreteScheduler"))
    assert refused.value.field == "scheduler"
    assert "DPMSolverMultistepScheduler" in refused.value.message


def test_kandinsky22_image2image_with_no_denoising_step_is_422(client: Client) -> None:
    image = Image.new("RGB", (SIZE, SIZE), "red")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    body = {"checkpoint": "tiny-kandinsky22-decoder", "task": "image2image",
            "inputs": {"image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()},
            "params": {"prompt": "x", "num_inference_steps": 2}}
    with pytest.raises(InvalidRequestError) as refused:
        client.submit(body)
    assert refused.value.field == "params.strength"
    assert "2 x 0.3" in refused.value.message


def test_cli_scheduler_flags(stack: LocalStack) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hotpipe", "submit", "--api", stack.api_url, "--checkpoint", "tiny-sd",
         "--prompt", "a boat", "--steps", "3", "--height", "64", "--width", "64", "--seed", "3",
         "--scheduler", "DPM++ 2M Karras", "--scheduler-config", "timestep_spacing=trailing",
         "--scheduler-config", "lower_order_final=true", "--wait", "--json"],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.splitlines()[-1])
    assert record["status"] == "succeeded"
    assert record["scheduler"] == {"name": "DPMSolverMultistepScheduler", "sampler": "DPM++ 2M Karras",
                                   "config": {"use_karras_sigmas": True, "timestep_spacing": "trailing",
                                              "lower_order_final": True}}


def test_a_lora_job_runs_on_the_hot_pipeline_and_leaves_no_trace(client: Client, stack: LocalStack) -> None:
    plain = run(client, t2i(seed=31))
    styled = run(client, t2i(seed=31, loras=[{"name": "tiny-lora-sd", "scale": 0.9}]))
    zero = run(client, t2i(seed=31, loras=[{"name": "tiny-lora-sd", "scale": 0.0}]))
    after = run(client, t2i(seed=31))

    assert styled.loras is not None
    assert [(lo.name, lo.scale, lo.weight_name) for lo in styled.loras] == [
        ("tiny-lora-sd", 0.9, "pytorch_lora_weights.safetensors")]
    assert not np.array_equal(pixels(client, plain), pixels(client, styled))
    assert np.array_equal(pixels(client, plain), pixels(client, zero))
    assert np.array_equal(pixels(client, plain), pixels(client, after))
    hot = [h for w in client.workers() for h in w["hot"] if h["checkpoint"].endswith("tiny-sd")]
    assert any("tiny-lora-sd" in h["adapters"] for h in hot), hot  # GET /v1/workers shows resident adapters
    prov = json.loads(stack.storage().get(f"jobs/{styled.id}/job.json"))["provenance"]
    assert prov["loras"] == [{"name": "tiny-lora-sd", "scale": 0.9, "weight_name": "pytorch_lora_weights.safetensors",
                              "source": "local", "revision": None}]


def test_an_sdxl_lora_on_an_sd_checkpoint_is_refused(client: Client) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        client.submit(t2i(loras=[{"name": "tiny-lora-sdxl"}]))
    assert refused.value.field == "loras.0.name"
    assert "stable-diffusion-xl" in refused.value.message


def test_cli_lora_flag(stack: LocalStack) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hotpipe", "submit", "--api", stack.api_url, "--checkpoint", "tiny-sd",
         "--prompt", "a boat", "--steps", "3", "--height", "64", "--width", "64", "--seed", "3",
         "--lora", "tiny-lora-sd:0.5", "--lora", "tiny-lora-sd-b", "--wait", "--json"],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.splitlines()[-1])
    assert record["status"] == "succeeded"
    assert [(lo["name"], lo["scale"]) for lo in record["loras"]] == [("tiny-lora-sd", 0.5), ("tiny-lora-sd-b", 1.0)]
