"""docs/configuration.md is generated from the settings model and must match it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hotpipe.config_reference import DEFAULT_PATH, main, render
from hotpipe.shared.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]


def test_committed_reference_matches_the_settings() -> None:
    committed = (ROOT / DEFAULT_PATH).read_text()
    assert committed == render(), "docs/configuration.md is stale: run `make docs`"


def test_every_setting_has_a_row_with_its_default_and_meaning() -> None:
    rows = [line for line in render().splitlines() if line.startswith(f"| `{ENV_PREFIX}")]
    fields = dataclasses.fields(Settings)
    assert [row.split("`")[1] for row in rows] == [ENV_PREFIX + f.name.upper() for f in fields]
    by_name = dict(zip([f.name for f in fields], rows, strict=True))
    assert "| `redis://127.0.0.1:6379/0` |" in by_name["redis_url"]
    assert "| unset |" in by_name["s3_endpoint_url"]
    assert "str \\| None" in by_name["s3_endpoint_url"], "a pipe inside a cell is escaped"
    assert "| `models` |" in by_name["model_root"]


def test_main_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "docs" / "configuration.md"
    assert main([str(target)]) == 0
    assert target.read_text() == render()
