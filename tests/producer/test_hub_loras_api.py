"""Hub LoRAs through the API in-process, over a real Hub on loopback, the session's redis and S3 server:
accepted, a caller's mistake a 422 naming the field, the Hub down a 503 with
``Retry-After``; nothing is enqueued for a refusal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from huggingface_hub import constants

from hotpipe.devstack import free_port
from hotpipe.shared.job import JobRecord
from tests.producer.conftest import Backlog


def point_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """What ``HF_ENDPOINT=url`` (and no ``HF_HUB_OFFLINE``) sets when huggingface_hub is imported."""
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def job(*loras: dict[str, Any]) -> dict[str, Any]:
    return {"checkpoint": "tiny-sd", "task": "text2image", "loras": list(loras),
            "params": {"prompt": "a boat", "num_inference_steps": 2, "height": 64, "width": 64}}


def test_a_hub_lora_is_accepted(api: TestClient, hub: str, monkeypatch: pytest.MonkeyPatch,
                                                       backlog: Callable[[], Backlog]) -> None:
    point_at(monkeypatch, hub)
    answer = api.post("/v1/jobs", json=job({"name": "someone/tiny-style", "scale": 0.7}))
    assert answer.status_code == 202, answer.text
    record = JobRecord.model_validate(answer.json())
    assert record.loras is not None and [(lo.name, lo.scale) for lo in record.loras] == [("someone/tiny-style", 0.7)]
    assert backlog() == Backlog(queued=1, records=1)


@pytest.mark.parametrize(("lora", "field"), [
    ({"name": "someone/no-such-repo"}, "loras.0.name"),
    ({"name": "someone/pickled-style"}, "loras.0.name"),
    ({"name": "someone/named-styles", "weight_name": "missing.safetensors"}, "loras.0.weight_name"),
    ({"name": "someone/tiny-style-xl"}, "loras.0.name"),
])
def test_a_hub_lora_mistake_is_422_and_enqueues_nothing(api: TestClient, hub: str, monkeypatch: pytest.MonkeyPatch,
                                                        backlog: Callable[[], Backlog], lora: dict[str, Any],
                                                        field: str) -> None:
    point_at(monkeypatch, hub)
    answer = api.post("/v1/jobs", json=job(lora))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field
    assert backlog() == Backlog(queued=0, records=0)


def test_the_hub_down_is_503_with_retry_after_and_enqueues_nothing(api: TestClient, hub: str,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   backlog: Callable[[], Backlog]) -> None:
    point_at(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    answer = api.post("/v1/jobs", json=job({"name": "someone/tiny-style"}))
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) > 0
    error = answer.json()["error"]
    assert error["code"] == "unavailable" and "Hugging Face Hub" in error["message"]
    assert backlog() == Backlog(queued=0, records=0)
    point_at(monkeypatch, hub)  # back up: the same request goes through (a failure was not cached)
    assert api.post("/v1/jobs", json=job({"name": "someone/tiny-style"})).status_code == 202
