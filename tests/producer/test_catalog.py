"""The model catalog (``GET /v1/models``): what the model root holds, resolved as a submit would, paged, cached."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hotpipe.producer.catalog import Catalog, Model, scan
from hotpipe.shared.settings import Settings

ALL_TASKS = ["text2image", "image2image", "inpainting"]


def entries(api: TestClient, **query: str | int) -> dict[str, dict[str, Any]]:
    page = api.get("/v1/models", params=query).json()
    assert page["object"] == "list"
    return {m["id"]: m for m in page["data"]}


def test_checkpoints_list_their_family_and_the_tasks_a_submit_accepts(api: TestClient) -> None:
    models = entries(api)
    sd, refiner, kandinsky = models["tiny-sd"], models["tiny-sdxl-refiner"], models["tiny-kandinsky22-decoder"]
    assert (sd["object"], sd["kind"], sd["family"], sd["tasks"]) == ("model", "checkpoint", "stable-diffusion",
                                                                     ALL_TASKS)
    assert sd["pipelines"] == {"text2image": "StableDiffusionPipeline", "image2image": "StableDiffusionImg2ImgPipeline",
                               "inpainting": "StableDiffusionInpaintPipeline"}
    assert refiner["tasks"] == ["image2image", "inpainting"]  # an SDXL refiner can't run text2image
    assert kandinsky["family"] == "kandinsky22" and "text2image" in kandinsky["tasks"]
    assert isinstance(sd["created"], int) and sd["owned_by"] == "hotpipe"


def test_controlnets_list_the_family_they_fit(api: TestClient) -> None:
    models = entries(api)
    assert {k: models[k]["family"] for k in ("tiny-controlnet-sd", "tiny-controlnet-sdxl")} == {
        "tiny-controlnet-sd": "stable-diffusion", "tiny-controlnet-sdxl": "stable-diffusion-xl"}
    assert models["tiny-controlnet-sd"]["kind"] == "controlnet" and "tasks" not in models["tiny-controlnet-sd"]


def test_loras_list_the_family_their_header_says_they_fit(api: TestClient) -> None:
    models = entries(api, limit=100)
    assert {k: (models[k]["kind"], models[k]["family"]) for k in ("tiny-lora-sd", "tiny-lora-sdxl")} == {
        "tiny-lora-sd": ("lora", "stable-diffusion"), "tiny-lora-sdxl": ("lora", "stable-diffusion-xl")}
    assert "tasks" not in models["tiny-lora-sd"] and "error" not in models["tiny-lora-sd"]


def test_a_file_that_is_no_lora_says_why(root: Path) -> None:
    (root / "broken-lora").mkdir()
    (root / "broken-lora" / "pytorch_lora_weights.safetensors").write_bytes(b"not safetensors")
    (entry,) = [m for m in scan(root) if m.id == "broken-lora"]
    assert entry.kind == "lora" and entry.family is None and entry.error and "not a readable safetensors" in entry.error


def test_pages_follow_each_other_without_gaps_or_repeats(api: TestClient) -> None:
    everything = list(entries(api))
    seen: list[str] = []
    after: str | None = None
    while True:
        page = api.get("/v1/models", params={"limit": 2, **({"after": after} if after else {})}).json()
        seen += [m["id"] for m in page["data"]]
        after = page["last_id"]
        if not page["has_more"]:
            break
    assert seen == everything and len(everything) > 4


def test_one_model_reads_alone_and_an_unknown_one_is_openai_s_404(api: TestClient) -> None:
    assert api.get("/v1/models/tiny-sd").json()["family"] == "stable-diffusion"
    missing = api.get("/v1/models/no-such-model")
    assert missing.status_code == 404
    assert missing.json()["error"] | {"message": ""} == {"message": "", "type": "invalid_request_error",
                                                          "param": "model", "code": "model_not_found"}


def test_a_limit_over_the_bound_is_refused_naming_it(api: TestClient, settings: Settings) -> None:
    response = api.get("/v1/models", params={"limit": settings.max_list_limit + 1})
    assert (response.status_code, response.json()["error"]["param"]) == (400, "limit")


@pytest.fixture
def root(tmp_path: Path, model_root: Path) -> Path:
    """A model root of copies of tiny-sd's model_index.json (all a catalog reads), one under org/."""
    for name in ("a-sd", "org/b-sd"):
        (tmp_path / name).mkdir(parents=True)
        shutil.copy(model_root / "tiny-sd" / "model_index.json", tmp_path / name)
    (tmp_path / ".locks" / "hidden").mkdir(parents=True)
    shutil.copy(model_root / "tiny-sd" / "model_index.json", tmp_path / ".locks" / "hidden")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model_index.json").write_text(json.dumps({"_class_name": "NoSuchPipeline"}))
    (tmp_path / "outside").symlink_to(model_root / "tiny-sd")
    return tmp_path


def test_scan_finds_nested_folders_skips_hidden_and_escaping_ones_and_says_why_one_runs_nothing(root: Path) -> None:
    models = {m.id: m for m in scan(root)}
    assert sorted(models) == ["a-sd", "broken", "org/b-sd"]
    assert models["org/b-sd"].pipelines["text2image"] == "StableDiffusionPipeline"
    assert models["broken"].pipelines == {} and "NoSuchPipeline" in (models["broken"].error or "")


def test_the_scan_is_kept_for_its_ttl(root: Path) -> None:
    kept, fresh = Catalog(root, ttl_s=3600), Catalog(root, ttl_s=0)
    before = [m.id for m in kept.models()], [m.id for m in fresh.models()]
    shutil.copytree(root / "a-sd", root / "c-sd")
    assert [m.id for m in kept.models()] == before[0]
    assert [m.id for m in fresh.models()] == sorted([*before[1], "c-sd"])


def test_a_scanner_hook_adds_a_kind(root: Path) -> None:
    (root / "my-lora").mkdir()
    (root / "my-lora" / "pytorch_lora_weights.safetensors").write_bytes(b"")

    def lora(name: str, folder: Path, _: Path) -> Model | None:
        if not (folder / "pytorch_lora_weights.safetensors").is_file():
            return None
        return Model(name, "lora", 0, "", "stable-diffusion")

    from hotpipe.producer.catalog import SCANNERS

    models = {m.id: m for m in Catalog(root, 0, (*SCANNERS, lora)).models()}
    assert models["my-lora"].kind == "lora" and models["a-sd"].kind == "checkpoint"


def test_the_api_reads_the_settings_cache_time(make_api: Callable[[Settings], TestClient], settings: Settings,
                                               root: Path) -> None:
    api = make_api(dataclasses.replace(settings, model_root=root, models_cache_s=3600))
    first = entries(api)
    shutil.copytree(root / "a-sd", root / "d-sd")
    assert entries(api) == first


def test_hotpipe_models_prints_one_line_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    from hotpipe.producer.models_cli import print_models

    print_models([{"id": "tiny-sd", "kind": "checkpoint", "family": "stable-diffusion",
                   "tasks": ["text2image", "inpainting"]},
                  {"id": "broken", "kind": "checkpoint", "family": None, "tasks": [], "error": "no class"},
                  {"id": "cn", "kind": "controlnet", "family": "stable-diffusion"}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["tiny-sd", "checkpoint", "stable-diffusion", "text2image,", "inpainting"]
    assert lines[1].endswith("runs nothing: no class") and lines[2].endswith("fits stable-diffusion")


def test_a_path_no_route_matches_still_answers_openai_s_shape(api: TestClient) -> None:
    response = api.get("/v1/models/a%0Ab")  # a newline: no route matches, the router's own 404
    error = response.json()["error"]
    assert response.status_code == 404 and error["type"] == "invalid_request_error" and error["code"] == "not_found"
    assert set(error) >= {"message", "type", "param", "code"}
