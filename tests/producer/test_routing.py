"""Routing at submit: a variant's job is recorded and enqueued under its base family, naming the exact class.

The checkpoints here are folders holding only ``model_index.json``: the producer reads
nothing else, so that is all routing needs.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from hotpipe.shared.settings import Settings
from tests.producer.conftest import queue_lists


@pytest.fixture
def variants_api(make_api: Callable[[Settings], TestClient], settings: Settings, tmp_path: Path) -> TestClient:
    root = tmp_path / "models"
    for name, class_name in CHECKPOINTS.items():
        (root / name).mkdir(parents=True)
        (root / name / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return make_api(dataclasses.replace(settings, model_root=root))


#: folder -> _class_name
CHECKPOINTS = {
    "sd": "StableDiffusionPipeline",
    "sd-pag": "StableDiffusionPAGPipeline",
    "sd-controlnet": "StableDiffusionControlNetPipeline",
    "sdxl-union": "StableDiffusionXLControlNetUnionPipeline",
    "flux-controlnet": "FluxControlNetPipeline",
    "sana-pag": "SanaPAGPipeline",
    "pixart": "PixArtSigmaPipeline",
}


def queued_job_ids(client: redis.Redis, family: str) -> list[str]:
    """Job ids of the Celery messages waiting on ``family``'s queue lists."""
    ids = []
    for name in queue_lists(family):
        for raw in client.lrange(name, 0, -1):
            ids += json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
    return ids


@pytest.mark.parametrize(("checkpoint", "variant", "base", "pipeline"), [
    ("sd-pag", "stable-diffusion-pag", "stable-diffusion", "StableDiffusionPAGPipeline"),
    ("sd-controlnet", "stable-diffusion-controlnet", "stable-diffusion", "StableDiffusionControlNetPipeline"),
    ("sdxl-union", "stable-diffusion-xl-controlnet-union", "stable-diffusion-xl",
     "StableDiffusionXLControlNetUnionPipeline"),
    ("flux-controlnet", "flux-controlnet", "flux", "FluxControlNetPipeline"),
    ("sana-pag", "sana-pag", "sana", "SanaPAGPipeline"),
    ("pixart", "pixart-sigma", "pixart-sigma", "PixArtSigmaPipeline"),
])
def test_variant_is_enqueued_on_its_base_family(variants_api: TestClient, redis_client: redis.Redis,
                                                checkpoint: str, variant: str, base: str, pipeline: str) -> None:
    # a checkpoint saved as a ControlNet pipeline holds its ControlNet, and conditions on a control image
    inputs = {"control_image": PIXEL_PNG} if "controlnet" in variant else {}
    response = variants_api.post("/v1/jobs", json={"checkpoint": checkpoint, "task": "text2image",
                                                   "params": {"prompt": "a lighthouse"}, "inputs": inputs})
    assert response.status_code == 202, response.text
    record = response.json()

    assert (record["family"], record["pipeline"]) == (base, pipeline)
    assert queued_job_ids(redis_client, base) == [record["id"]]
    if variant != base:
        assert queued_job_ids(redis_client, variant) == []


def test_variant_task_switch_keeps_the_exact_class(variants_api: TestClient) -> None:
    response = variants_api.post("/v1/jobs", json={"checkpoint": "sd-pag", "task": "image2image",
                                                   "params": {"prompt": "x"},
                                                   "inputs": {"image": PIXEL_PNG}})
    assert response.status_code == 202, response.text
    assert (response.json()["family"], response.json()["pipeline"]) == ("stable-diffusion",
                                                                        "StableDiffusionPAGImg2ImgPipeline")


#: a 1x1 PNG
PIXEL_PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAA"
             "AElFTkSuQmCC")


@pytest.mark.parametrize(("request_fields", "pipeline"), [
    ({"enable_pag": True}, "StableDiffusionPAGPipeline"),
    ({"enable_pag": False}, "StableDiffusionPipeline"),
])
def test_enable_pag_switches_the_class_and_keeps_the_queue(variants_api: TestClient, redis_client: redis.Redis,
                                                           request_fields: dict[str, bool], pipeline: str) -> None:
    checkpoint = "sd-pag" if request_fields["enable_pag"] is False else "sd"
    response = variants_api.post("/v1/jobs", json={"checkpoint": checkpoint, "task": "text2image",
                                                   "params": {"prompt": "x"}, **request_fields})
    assert response.status_code == 202, response.text
    assert (response.json()["family"], response.json()["pipeline"]) == ("stable-diffusion", pipeline)
    assert queued_job_ids(redis_client, "stable-diffusion") == [response.json()["id"]]


def test_control_image_without_a_controlnet_says_what_to_do(variants_api: TestClient) -> None:
    response = variants_api.post("/v1/jobs", json={"checkpoint": "sd", "task": "text2image",
                                                   "params": {"prompt": "x"}, "inputs": {"control_image": PIXEL_PNG}})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "inputs.control_image"
    assert "set controlnet to a ControlNet checkpoint" in response.json()["error"]["message"]
