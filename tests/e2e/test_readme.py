"""The README's Python examples run as written against a live stack, each on its own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hotpipe.devstack import LocalStack
from hotpipe.shared.status import Status
from hotpipe.shared.webhooks import signed_headers
from tests.conftest import STACK_WEBHOOK_SECRET

pytestmark = pytest.mark.e2e
README = Path(__file__).resolve().parents[2] / "README.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def run_block(marker: str, stack: LocalStack) -> dict[str, Any]:
    """Run the one Python block of the README that contains ``marker`` (blocks move as the README grows)."""
    (index,) = [i for i, code in enumerate(blocks()) if marker in code]
    code = blocks()[index].replace("http://127.0.0.1:8000", stack.api_url)
    scope: dict[str, Any] = {"__name__": f"readme_block_{index}"}
    exec(compile(code, f"{README}:python block {index}", "exec"), scope)
    return scope


def test_every_python_block_is_checked() -> None:
    assert len(blocks()) == 7


def test_the_client_example(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    scope = run_block("png =", stack)
    assert scope["record"].status is Status.SUCCEEDED
    assert scope["png"].startswith(b"\x89PNG")
    assert "status" in capsys.readouterr().out


def test_the_idempotency_listing_and_upload_example(stack: LocalStack, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    scope = run_block("boat-batch-1-item-1", stack)
    assert scope["again"].id == scope["job"].id and scope["mine"].id == "boat-batch-1-item-1"
    assert scope["upload"].uri.startswith("s3://")
    out = capsys.readouterr().out
    assert "idempotency_conflict" in out and "succeeded" in out


def test_the_async_example(stack: LocalStack) -> None:
    scope = run_block("AsyncClient", stack)
    assert [r.status for r in scope["records"]] == [Status.SUCCEEDED] * 3


def test_the_scheduler_example(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    scope = run_block("record.scheduler", stack)
    assert scope["record"].status is Status.SUCCEEDED
    assert "EulerAncestralDiscreteScheduler" in capsys.readouterr().out


def test_the_lora_example(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    scope = run_block("record.loras", stack)
    assert scope["record"].status is Status.SUCCEEDED
    assert "tiny-lora-sd" in capsys.readouterr().out


def test_the_webhook_receiver_example(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTPIPE_WEBHOOK_SECRET", STACK_WEBHOOK_SECRET)
    receive = run_block("def receive", stack)["receive"]
    body = b'{"id": "j1", "status": "succeeded"}'
    assert receive(signed_headers(STACK_WEBHOOK_SECRET, "completed", "j1.1", body), body)["id"] == "j1"
    with pytest.raises(PermissionError):
        receive(signed_headers("not-the-secret", "completed", "j1.1", body), body)


def test_the_openai_example(stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    scope = run_block("images.generate", stack)
    assert len(scope["urls"]) == 2 and all(url.startswith("http") for url in scope["urls"])
    assert scope["edited"].data[0].url.startswith("http")
    assert "tiny-sd" in capsys.readouterr().out
