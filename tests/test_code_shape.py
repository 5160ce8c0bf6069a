"""The code's shape: functions read at once, modules small enough to hold in one's head."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("hotpipe", "shared", "producer", "workers", "benchmarks")
#: generated from the installed Diffusers (`make tables`): tables, not code to read
GENERATED = {"family_table.py", "scheduler_table.py"}
MAX_FUNCTION_LINES = 50
MAX_MODULE_LINES = 450


def modules() -> list[Path]:
    return sorted(p for root in SOURCES for p in (ROOT / root).rglob("*.py")
                  if p.name not in GENERATED and "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_is_longer_than_a_screen(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"split these into named steps (≤ {MAX_FUNCTION_LINES} lines each)"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_a_grab_bag(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{lines} lines: split it by noun"
