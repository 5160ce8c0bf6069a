"""The README's Python example runs as written against a live stack."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hotpipe.devstack import LocalStack
from hotpipe.shared.status import Status

pytestmark = pytest.mark.e2e
README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    code = blocks[0].replace("http://127.0.0.1:8000", stack.api_url)
    scope: dict[str, Any] = {}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["record"].status is Status.SUCCEEDED
    assert scope["png"].startswith(b"\x89PNG")
    assert "status" in capsys.readouterr().out
