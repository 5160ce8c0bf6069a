"""The source layout: one import path per file, equal to its place under its source root, no symlinks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = ("shared", "producer", "workers")


def tracked() -> list[str]:
    return subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_the_tree_has_no_symlinks() -> None:
    links = [line.split("\t", 1)[1] for line in tracked() if line.startswith("120000 ")]
    assert links == []


@pytest.mark.parametrize("root", SOURCE_ROOTS)
def test_each_source_root_holds_only_its_subpackage(root: str) -> None:
    entries = {p.name for p in (ROOT / root).iterdir() if p.name != "__pycache__"}
    assert entries == {"hotpipe"}
    inner = {p.name for p in (ROOT / root / "hotpipe").iterdir() if p.name != "__pycache__"}
    assert inner == {root}, "the portion of hotpipe in a source root has no __init__.py of its own"


@pytest.mark.parametrize("root", SOURCE_ROOTS)
def test_every_module_imports_from_its_place_on_disk(root: str) -> None:
    import importlib

    for path in sorted((ROOT / root / "hotpipe" / root).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT / root).with_suffix("").parts).removesuffix(".__init__")
        module = importlib.import_module(name)
        assert Path(module.__file__ or "").resolve() == path


@pytest.mark.parametrize("root", SOURCE_ROOTS)
def test_the_top_level_folders_are_not_packages_of_their_own(root: str) -> None:
    module = min(p.stem for p in (ROOT / root / "hotpipe" / root).glob("[a-z]*.py"))
    done = subprocess.run([sys.executable, "-c", f"import {root}.{module}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr
