"""Checkpoint resolution: local folders under the model root, path escapes, and the Hub cache offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hotpipe.shared.checkpoints import CheckpointNotFound, InvalidCheckpoint, resolve
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.families import UnsupportedPipeline
from hotpipe.shared.job import Task

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_checkpoint(folder: Path, class_name: str = "StableDiffusionPipeline", **config: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, **config}))
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A model root with one checkpoint ``sd``, escape targets outside it and some symlinks."""
    root = tmp_path / "models"
    write_checkpoint(root / "sd")
    write_checkpoint(root / "pixart", "PixArtSigmaPipeline")
    write_checkpoint(root / "shap-e", "ShapEImg2ImgPipeline")
    write_checkpoint(tmp_path / "outside")
    (root / "a").mkdir()
    (root / "empty").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "hop2").symlink_to(tmp_path / "outside")
    (root / "hop1").symlink_to(root / "hop2")
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    (root / "alias").symlink_to(root / "sd")
    return root


@pytest.mark.parametrize(("task", "pipeline"), [
    (Task.TEXT2IMAGE, "StableDiffusionPipeline"),
    (Task.IMAGE2IMAGE, "StableDiffusionImg2ImgPipeline"),
    (Task.INPAINTING, "StableDiffusionInpaintPipeline"),
])
def test_local_checkpoint_resolves_each_task(root: Path, task: Task, pipeline: str) -> None:
    r = resolve("sd", task, root)
    assert (r.source, r.family, r.pipeline, r.class_name) == ("local", "stable-diffusion", pipeline,
                                                              "StableDiffusionPipeline")
    assert (r.location, r.revision) == (str((root / "sd").resolve()), None)


def test_unsupported_class_uses_autopipeline_wording(root: Path) -> None:
    with pytest.raises(UnsupportedPipeline) as exc:
        resolve("shap-e", Task.IMAGE2IMAGE, root)
    assert str(exc.value) == "AutoPipeline can't find a pipeline linked to ShapEImg2ImgPipeline for None"
    assert (exc.value.status_code, exc.value.field) == (422, "checkpoint")


def test_family_without_the_task_names_the_family(root: Path) -> None:
    with pytest.raises(UnsupportedPipeline, match="family pixart-sigma; it has: text2image") as exc:
        resolve("pixart", Task.INPAINTING, root)
    assert "PixArtSigmaPipeline for pixart-sigma" in str(exc.value)


@pytest.mark.parametrize(("class_name", "task", "family", "pipeline", "base"), [
    ("StableDiffusionPipeline", Task.TEXT2IMAGE, "stable-diffusion", "StableDiffusionPipeline", "stable-diffusion"),
    ("StableDiffusionPAGPipeline", Task.INPAINTING, "stable-diffusion-pag", "StableDiffusionPAGInpaintPipeline",
     "stable-diffusion"),
    ("StableDiffusionXLControlNetUnionPipeline", Task.IMAGE2IMAGE, "stable-diffusion-xl-controlnet-union",
     "StableDiffusionXLControlNetUnionImg2ImgPipeline", "stable-diffusion-xl"),
    ("FluxControlNetPipeline", Task.TEXT2IMAGE, "flux-controlnet", "FluxControlNetPipeline", "flux"),
    ("SanaPAGPipeline", Task.TEXT2IMAGE, "sana-pag", "SanaPAGPipeline", "sana"),
    ("ChromaPipeline", Task.INPAINTING, "chroma", "ChromaInpaintPipeline", "chroma"),
])
def test_resolution_names_the_variant_and_its_base(root: Path, class_name: str, task: Task, family: str,
                                                   pipeline: str, base: str) -> None:
    write_checkpoint(root / "ckpt", class_name)
    r = resolve("ckpt", task, root)
    assert (r.class_name, r.family, r.pipeline, r.base_family) == (class_name, family, pipeline, base)
    assert r.to_json()["base_family"] == base


@pytest.mark.parametrize(("task", "pipeline"), [(Task.IMAGE2IMAGE, "StableDiffusionXLImg2ImgPipeline"),
                                                (Task.INPAINTING, "StableDiffusionXLInpaintPipeline")])
def test_refiner_runs_image_tasks(root: Path, task: Task, pipeline: str) -> None:
    write_checkpoint(root / "refiner", "StableDiffusionXLImg2ImgPipeline", requires_aesthetics_score=True)
    assert resolve("refiner", task, root).pipeline == pipeline


def test_refiner_text2image_is_refused_naming_the_setting(root: Path) -> None:
    write_checkpoint(root / "refiner", "StableDiffusionXLImg2ImgPipeline", requires_aesthetics_score=True)
    with pytest.raises(UnsupportedPipeline) as exc:
        resolve("refiner", Task.TEXT2IMAGE, root)
    assert str(exc.value) == ("checkpoint 'refiner' sets requires_aesthetics_score in model_index.json (an SDXL "
                              "refiner): it runs image2image and inpainting only, not text2image")
    assert (exc.value.status_code, exc.value.field) == (422, "checkpoint")


@pytest.mark.parametrize("value", [False, None, "true", 1])
def test_only_a_true_aesthetics_setting_limits_tasks(root: Path, value: object) -> None:
    write_checkpoint(root / "xl", "StableDiffusionXLImg2ImgPipeline", requires_aesthetics_score=value)
    assert resolve("xl", Task.TEXT2IMAGE, root).pipeline == "StableDiffusionXLPipeline"


@pytest.mark.parametrize("name", [
    "..", "../outside", "a/../../outside", "a/../sd", "/etc", "/etc/passwd", "~/outside", "~",
    "C:\\outside", "C:outside", "a\\..\\..\\outside", "..\\outside", "%2e%2e/outside", "%2E%2E%2Foutside",
    "sd\x00", "\x00", "./sd", "sd/.", ".", "", "sd ", " sd", "sd\n", "escape", "hop1", "loop1",
])
def test_escaping_names_are_refused(root: Path, name: str) -> None:
    with pytest.raises((InvalidCheckpoint, CheckpointNotFound)) as exc:
        resolve(name, Task.TEXT2IMAGE, root)
    assert (exc.value.status_code, exc.value.field) == (422, "checkpoint")


def test_absolute_path_to_a_real_checkpoint_is_refused(root: Path) -> None:
    with pytest.raises(InvalidCheckpoint):
        resolve(str(root / "sd"), Task.TEXT2IMAGE, root)


def test_symlink_inside_the_root_is_accepted(root: Path) -> None:
    r = resolve("alias", Task.TEXT2IMAGE, root)
    assert (r.location, r.pipeline) == (str((root / "sd").resolve()), "StableDiffusionPipeline")


def test_folder_without_model_index_is_refused(root: Path) -> None:
    with pytest.raises(InvalidCheckpoint, match=r"model_index\.json") as exc:
        resolve("empty", Task.TEXT2IMAGE, root)
    assert exc.value.field == "checkpoint"


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"_class_name": 3}', "{}"])
def test_unusable_model_index_is_refused(root: Path, content: str) -> None:
    (root / "empty" / "model_index.json").write_text(content)
    with pytest.raises(InvalidCheckpoint) as exc:
        resolve("empty", Task.TEXT2IMAGE, root)
    assert (exc.value.status_code, exc.value.field) == (422, "checkpoint")


def test_revision_on_a_local_folder_is_refused(root: Path) -> None:
    with pytest.raises(InvalidRequest) as exc:
        resolve("sd", Task.TEXT2IMAGE, root, revision="main")
    assert (exc.value.status_code, exc.value.field) == (422, "revision")


@pytest.mark.parametrize("name", ["no-such-model", "a/b/c", "-org/name", "org/name-", "org--x/name"])
def test_name_neither_local_nor_repo_id_is_not_found(root: Path, name: str) -> None:
    with pytest.raises(CheckpointNotFound) as exc:
        resolve(name, Task.TEXT2IMAGE, root)
    assert (exc.value.status_code, exc.value.field) == (422, "checkpoint")


# -- Hub, offline, from a cache laid out as huggingface_hub writes it ------------------------------------------

RESOLVE_SCRIPT = """
import json, sys
from pathlib import Path
from hotpipe.shared.checkpoints import resolve
from hotpipe.shared.errors import HotpipeError
from hotpipe.shared.job import Task

out = []
for checkpoint, task, revision, controlnet in json.loads(sys.argv[2]):
    try:
        out.append(resolve(checkpoint, Task(task), Path(sys.argv[1]), revision, controlnet=controlnet).to_json())
    except HotpipeError as exc:
        out.append({"error": type(exc).__name__, "code": exc.code, "status": exc.status_code, "field": exc.field})
print(json.dumps(out))
"""

CN_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
#: (checkpoint, task, revision, controlnet)
HubCase = tuple[str, str, str | None, str | None]
HUB_CASES: list[HubCase] = [
    ("org/tiny-sd", "image2image", None, None),
    ("org/tiny-sd", "inpainting", COMMIT, None),
    ("org/not-cached", "text2image", None, None),
    ("org/tiny-sd", "inpainting", None, "org/sd-controlnet"),
    ("org/tiny-sd", "text2image", None, "org/a-unet"),
    ("org/tiny-sd", "text2image", None, "org/not-cached-controlnet"),
    ("org/k22-decoder", "image2image", None, None),
]
PRIOR_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def write_hub_repo(cache: Path, repo_id: str, commit: str, filename: str, content: dict[str, Any] | str) -> None:
    """One file of a repo as huggingface_hub caches it (refs/main -> snapshot; a plain file is enough)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content)
    (repo / "snapshots" / commit / filename).write_text(text)


@pytest.fixture(scope="module")
def hub_results(tmp_path_factory: pytest.TempPathFactory) -> dict[HubCase, dict[str, Any]]:
    """Resolve HUB_CASES in a child process with HF_HUB_OFFLINE=1 over a hand-made Hub cache."""
    base = tmp_path_factory.mktemp("hub")
    write_hub_repo(base / "cache", "org/tiny-sd", COMMIT, "model_index.json",
                   {"_class_name": "StableDiffusionPipeline"})
    write_hub_repo(base / "cache", "org/sd-controlnet", CN_COMMIT, "config.json", {"_class_name": "ControlNetModel"})
    write_hub_repo(base / "cache", "org/a-unet", CN_COMMIT, "config.json", {"_class_name": "UNet2DConditionModel"})
    # a Kandinsky 2.2 decoder whose model card names its prior, like kandinsky-community/kandinsky-2-2-decoder
    write_hub_repo(base / "cache", "org/k22-decoder", COMMIT, "model_index.json",
                   {"_class_name": "KandinskyV22Pipeline"})
    write_hub_repo(base / "cache", "org/k22-decoder", COMMIT, "README.md", "---\nprior:\n- org/k22-prior\n---\n")
    write_hub_repo(base / "cache", "org/k22-prior", PRIOR_COMMIT, "model_index.json",
                   {"_class_name": "KandinskyV22PriorPipeline"})
    (base / "models").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(base / "cache"), "HF_HOME": str(base / "home")}
    done = subprocess.run([sys.executable, "-c", RESOLVE_SCRIPT, str(base / "models"), json.dumps(HUB_CASES)],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    return dict(zip(HUB_CASES, json.loads(done.stdout.splitlines()[-1]), strict=True))


@pytest.mark.parametrize(("case", "pipeline"), [
    (HUB_CASES[0], "StableDiffusionImg2ImgPipeline"),
    (HUB_CASES[1], "StableDiffusionInpaintPipeline"),
])
def test_cached_hub_repo_resolves_offline_to_its_commit(
        hub_results: dict[HubCase, dict[str, Any]], case: HubCase, pipeline: str) -> None:
    got = hub_results[case]
    assert (got["source"], got["location"], got["revision"]) == ("hub", "org/tiny-sd", COMMIT)
    assert (got["family"], got["pipeline"]) == ("stable-diffusion", pipeline)


def test_uncached_hub_repo_offline_is_not_found(hub_results: dict[HubCase, dict[str, Any]]) -> None:
    assert hub_results[HUB_CASES[2]] == {"error": "CheckpointNotFound", "code": "checkpoint_not_found",
                                         "status": 422, "field": "checkpoint"}


def test_hub_decoder_and_its_connected_prior_resolve_offline(hub_results: dict[HubCase, dict[str, Any]]) -> None:
    got = hub_results[HUB_CASES[6]]
    assert (got["family"], got["pipeline"], got["revision"]) == (
        "kandinsky22", "KandinskyV22Img2ImgCombinedPipeline", COMMIT)
    assert got["prior"] == {"checkpoint": "org/k22-prior", "source": "hub", "location": "org/k22-prior",
                            "revision": PRIOR_COMMIT, "class_name": "KandinskyV22PriorPipeline"}


def test_hub_controlnet_resolves_offline_to_its_commit(hub_results: dict[HubCase, dict[str, Any]]) -> None:
    got = hub_results[HUB_CASES[3]]
    assert (got["family"], got["pipeline"], got["base_family"]) == (
        "stable-diffusion-controlnet", "StableDiffusionControlNetInpaintPipeline", "stable-diffusion")
    assert got["controlnet"] == {"checkpoint": "org/sd-controlnet", "source": "hub", "location": "org/sd-controlnet",
                                 "revision": CN_COMMIT, "class_name": "ControlNetModel", "kind": "controlnet"}


@pytest.mark.parametrize(("case", "error"), [
    (HUB_CASES[4], {"error": "InvalidCheckpoint", "code": "invalid_checkpoint", "status": 422, "field": "controlnet"}),
    (HUB_CASES[5], {"error": "CheckpointNotFound", "code": "checkpoint_not_found", "status": 422,
                    "field": "controlnet"}),
])
def test_hub_controlnet_that_is_not_one_is_refused(hub_results: dict[HubCase, dict[str, Any]], case: HubCase,
                                                   error: dict[str, Any]) -> None:
    assert hub_results[case] == error


# -- ControlNet checkpoints, local -------------------------------------------------------------------------------

def write_model(folder: Path, class_name: str, **config: Any) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": class_name, **config}))


@pytest.mark.parametrize(("base", "class_name", "controlnet", "task", "pipeline"), [
    ("StableDiffusionPipeline", "ControlNetModel", {}, Task.IMAGE2IMAGE, "StableDiffusionControlNetImg2ImgPipeline"),
    ("StableDiffusionXLPipeline", "ControlNetModel", {"addition_embed_type": "text_time"}, Task.TEXT2IMAGE,
     "StableDiffusionXLControlNetPipeline"),
    ("StableDiffusionXLPipeline", "ControlNetUnionModel", {}, Task.INPAINTING,
     "StableDiffusionXLControlNetUnionInpaintPipeline"),
    ("FluxPipeline", "FluxControlNetModel", {}, Task.TEXT2IMAGE, "FluxControlNetPipeline"),
])
def test_local_controlnet_picks_the_controlnet_class(root: Path, base: str, class_name: str,
                                                     controlnet: dict[str, Any], task: Task, pipeline: str) -> None:
    write_checkpoint(root / "base", base)
    write_model(root / "cn", class_name, **controlnet)
    r = resolve("base", task, root, controlnet="cn")
    assert r.pipeline == pipeline
    assert r.controlnet is not None and (r.controlnet.class_name, r.controlnet.location) == (
        class_name, str((root / "cn").resolve()))


@pytest.mark.parametrize(("make", "says"), [
    (lambda p: write_model(p, "UNet2DConditionModel"), "is a UNet2DConditionModel, not a ControlNet"),
    (lambda p: write_model(p, "SD3ControlNetModel"), "made for stable-diffusion-3"),
    (lambda p: write_model(p, "ControlNetModel", addition_embed_type="text_time"), "made for stable-diffusion-xl"),
    (lambda p: write_checkpoint(p), "is a Diffusers pipeline (StableDiffusionPipeline), not a ControlNet model"),
    (lambda p: p.mkdir(), "has no config.json"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text("[]")), "not a JSON object"),
])
def test_a_controlnet_that_is_not_one_for_this_checkpoint_is_refused(root: Path, make: Any, says: str) -> None:
    make(root / "cn")
    with pytest.raises(InvalidCheckpoint) as exc:
        resolve("sd", Task.TEXT2IMAGE, root, controlnet="cn")
    assert (exc.value.status_code, exc.value.field) == (422, "controlnet")
    assert says in str(exc.value)


# -- connected priors (Kandinsky 2.2), local ---------------------------------------------------------------------

def test_local_decoder_names_its_prior_in_the_model_card(root: Path) -> None:
    write_checkpoint(root / "prior", "KandinskyV22PriorPipeline")
    write_checkpoint(root / "decoder", "KandinskyV22Pipeline")
    (root / "decoder" / "README.md").write_text("---\nlicense: apache-2.0\nprior:\n- prior\n---\n# card\n")
    r = resolve("decoder", Task.TEXT2IMAGE, root)
    assert (r.family, r.pipeline) == ("kandinsky22", "KandinskyV22CombinedPipeline")
    assert r.prior is not None and (r.prior.location, r.prior.class_name) == (
        str((root / "prior").resolve()), "KandinskyV22PriorPipeline")


@pytest.mark.parametrize(("card", "says"), [
    (None, "its model card (README.md) must name its prior, a KandinskyV22PriorPipeline checkpoint"),
    ("# no header\n", "must name its prior"),
    ("---\nprior: []\n---\n", "must name its prior"),
    ("---\nprior:\n- sd\n---\n", "is a StableDiffusionPipeline, not a KandinskyV22PriorPipeline"),
    ("---\nprior: [\n---\n", "unreadable header"),
])
def test_decoder_without_a_usable_prior_is_refused(root: Path, card: str | None, says: str) -> None:
    write_checkpoint(root / "decoder", "KandinskyV22Pipeline")
    if card is not None:
        (root / "decoder" / "README.md").write_text(card)
    with pytest.raises(InvalidCheckpoint) as exc:
        resolve("decoder", Task.TEXT2IMAGE, root)
    assert (exc.value.status_code, exc.value.field) == (422, "checkpoint")
    assert says in str(exc.value)


def test_prior_that_is_missing_is_not_found(root: Path) -> None:
    write_checkpoint(root / "decoder", "KandinskyV22Pipeline")
    (root / "decoder" / "README.md").write_text("---\nprior:\n- no-such-prior\n---\n")
    with pytest.raises(CheckpointNotFound):
        resolve("decoder", Task.TEXT2IMAGE, root)
