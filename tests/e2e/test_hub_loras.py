"""A Hub LoRA end to end: real API and Celery worker processes with ``HF_ENDPOINT`` pointed at a real Hub
on loopback (its own process, the Hub's URL layout).  The API reads only the file's header; the worker
downloads the one safetensors file through huggingface_hub and gives the pixels of the same LoRA from a
local folder; repeated submits don't go back to the Hub."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.producer.client_errors import InvalidRequestError
from hotpipe.shared.job import JobRecord
from hotpipe.shared.status import Status
from tests.hub_server import LORA, commit_of, requests_served

pytestmark = pytest.mark.e2e
REPO = "someone/tiny-style"


@pytest.fixture(scope="module")
def hub_stack(tmp_path_factory: pytest.TempPathFactory, model_root: Path, hub: str) -> Iterator[LocalStack]:
    """A stack whose API and worker talk to the loopback Hub, each with a Hub cache of its own."""
    work = tmp_path_factory.mktemp("hub-stack")
    env = {"HF_ENDPOINT": hub, "HF_HUB_OFFLINE": "0", "HF_HOME": str(work / "hf-home"),
           "HF_HUB_CACHE": str(work / "api-hub-cache")}
    with LocalStack(work, model_root, redis_binary=find_redis_server("system"), workers=0, extra_env=env) as s:
        s.start_worker("worker0", extra_env={"HF_HUB_CACHE": str(work / "worker-hub-cache")})
        yield s


def run(client: Client, seed: int, *loras: dict[str, Any]) -> JobRecord:
    record = client.wait(client.submit({
        "checkpoint": "tiny-sd", "task": "text2image", "loras": list(loras),
        "params": {"prompt": "a red cube", "num_inference_steps": 3, "height": 64, "width": 64, "seed": seed}}).id,
        timeout_s=120)
    assert record.status is Status.SUCCEEDED, record.error
    return record


def pixels(client: Client, record: JobRecord) -> np.ndarray:
    assert record.result is not None
    return np.asarray(Image.open(io.BytesIO(client.download(record.result.images[0].url or ""))))


def repo_requests(hub: str, before: int) -> list[tuple[str, str, str]]:
    return [r for r in requests_served(hub)[before:] if r[1].startswith(f"/{REPO}/")]


def test_a_hub_lora_job_runs_with_the_file_the_worker_downloads(hub_stack: LocalStack, hub: str) -> None:
    client = Client(hub_stack.api_url)
    before = len(requests_served(hub))
    local = run(client, 5, {"name": "tiny-lora-sd", "scale": 0.9})
    from_hub = run(client, 5, {"name": REPO, "scale": 0.9})
    plain = run(client, 5)

    assert np.array_equal(pixels(client, from_hub), pixels(client, local))  # the same weights, through the Hub
    assert not np.array_equal(pixels(client, from_hub), pixels(client, plain))
    assert from_hub.loras is not None and [(lo.name, lo.weight_name) for lo in from_hub.loras] == [(REPO, LORA)]
    commit = commit_of(REPO)
    sidecar = json.loads(hub_stack.storage().get(f"jobs/{from_hub.id}/job.json"))
    assert sidecar["provenance"]["loras"] == [{"name": REPO, "scale": 0.9, "weight_name": LORA, "source": "hub",
                                               "revision": commit}]
    served = repo_requests(hub, before)
    header_reads = [r for r in served if r[0] == "GET" and r[2]]
    downloads = [r for r in served if r[0] == "GET" and not r[2]]
    assert header_reads and all(wanted.startswith("bytes=0-") for _, _, wanted in header_reads)  # the API
    assert [path for _, path, _ in downloads] == [f"/{REPO}/resolve/{commit}/{LORA}"]  # the worker, once
    workdir = hub_stack.workdir
    assert not list((workdir / "api-hub-cache").rglob("*.safetensors"))  # the API never holds the weights
    assert list((workdir / "worker-hub-cache").rglob(LORA))

    again = len(requests_served(hub))
    run(client, 6, {"name": REPO, "scale": 0.5})
    assert repo_requests(hub, again) == []  # header cached in the API, adapter resident in the worker


def test_a_missing_hub_lora_is_refused_naming_the_field(hub_stack: LocalStack) -> None:
    with pytest.raises(InvalidRequestError) as refused, Client(hub_stack.api_url) as client:
        client.submit({"checkpoint": "tiny-sd", "task": "text2image", "loras": [{"name": "someone/pickled-style"}],
                       "params": {"prompt": "x", "num_inference_steps": 2}})
    assert refused.value.field == "loras.0.name" and "pickle" in refused.value.message


def test_cli_names_a_hub_lora_file_with_at(hub_stack: LocalStack) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hotpipe", "submit", "--api", hub_stack.api_url, "--checkpoint", "tiny-sd",
         "--prompt", "a boat", "--steps", "2", "--height", "64", "--width", "64", "--seed", "3",
         "--lora", "someone/named-styles@style-b.safetensors:0.5", "--wait", "--json"],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.splitlines()[-1])
    assert record["status"] == "succeeded"
    assert [(lo["name"], lo["weight_name"], lo["scale"]) for lo in record["loras"]] == [
        ("someone/named-styles", "style-b.safetensors", 0.5)]
