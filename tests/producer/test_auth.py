"""API keys, tenants, rate limits and bounded queues, over the real redis-server and S3 server."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hotpipe.producer.auth import NO_KEYS_WARNING, KeyTable, hash_key, new_key, parse_keys
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.messages import run_message
from hotpipe.shared.queues import priority_lists, worker_queue
from hotpipe.shared.registry import Registry, WorkerInfo
from hotpipe.shared.settings import Settings
from hotpipe.shared.store import JobStore
from tests.jobs import job_spec
from tests.producer.conftest import Backlog

KEY_A, KEY_B = new_key(), new_key()
JOB = {"checkpoint": "tiny-sd", "task": "text2image", "params": {"prompt": "a red fox"}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed_api(make_api: Callable[[Settings], TestClient], settings: Settings, tmp_path: Path) -> TestClient:
    """Tenant ``acme`` from the setting, tenant ``globex`` from the keys file."""
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# operators' file\n{hash_key(KEY_B)} globex\n")
    return make_api(dataclasses.replace(settings, api_keys=f"{hash_key(KEY_A)}:acme", api_keys_file=keys_file))


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


# -- keys ----------------------------------------------------------------------------------

def test_keys_are_configured_as_hashes_never_as_keys() -> None:
    assert parse_keys(f"{hash_key(KEY_A)}:acme, {hash_key(KEY_B)} globex", "test") == \
        {hash_key(KEY_A): "acme", hash_key(KEY_B): "globex"}
    with pytest.raises(ValueError, match="SHA-256"):
        parse_keys(f"{KEY_A}:acme", "test")
    with pytest.raises(ValueError, match="tenant"):
        parse_keys(f"{hash_key(KEY_A)}:../etc", "test")


def test_new_keys_are_random_and_long() -> None:
    assert KEY_A != KEY_B and len(KEY_A) >= 40


@pytest.mark.parametrize("headers", [{}, bearer("hp_wrong"), {"Authorization": KEY_A},
                                     {"Authorization": f"Basic {KEY_A}"}, bearer("")],
                         ids=["none", "wrong-key", "no-scheme", "basic", "empty"])
def test_every_job_route_needs_a_valid_key(keyed_api: TestClient, headers: dict[str, str],
                                           backlog: Callable[[], Backlog]) -> None:
    job_id = keyed_api.post("/v1/jobs", json=JOB, headers=bearer(KEY_A)).json()["id"]
    calls = [("POST", "/v1/jobs", JOB), ("GET", f"/v1/jobs/{job_id}", None),
             ("GET", f"/v1/jobs/{job_id}/events", None), ("POST", f"/v1/jobs/{job_id}/cancel", None)]
    for method, path, body in calls:
        response = keyed_api.request(method, path, json=body, headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert backlog() == Backlog(queued=1, records=1)  # only the authorized submit
    assert keyed_api.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).json()["status"] == "queued"


def test_health_and_docs_need_no_key(keyed_api: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert keyed_api.get(path).status_code == 200, path
    schemes = keyed_api.get("/openapi.json").json()["components"]["securitySchemes"]
    assert any(s.get("scheme", "").lower() == "bearer" for s in schemes.values())


def test_a_job_belongs_to_its_tenant_and_is_404_to_others(keyed_api: TestClient, redis_client: Any) -> None:
    mine = keyed_api.post("/v1/jobs", json=JOB, headers=bearer(KEY_A))
    assert mine.status_code == 202 and mine.json()["tenant"] == "acme"
    job_id = mine.json()["id"]
    unknown = "0" * 32

    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}?wait=1", f"/v1/jobs/{job_id}/events"):
        theirs = keyed_api.get(path, headers=bearer(KEY_B))
        never = keyed_api.get(path.replace(job_id, unknown), headers=bearer(KEY_B))
        assert_error(theirs, 404, "not_found")
        assert theirs.json()["error"]["message"].replace(job_id, unknown) == never.json()["error"]["message"]
    assert_error(keyed_api.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(KEY_B)), 404, "not_found")

    stored = JobStore(redis_client, 60).get(job_id)
    assert stored is not None and stored.record.tenant == "acme" and stored.record.status.value == "queued"
    assert keyed_api.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).json()["tenant"] == "acme"
    assert keyed_api.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(KEY_A)).json()["status"] == "canceled"


def test_without_keys_everyone_is_tenant_default_and_the_api_warns(
        make_api: Callable[[Settings], TestClient], settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        api = make_api(settings)
    assert NO_KEYS_WARNING in caplog.text
    assert api.post("/v1/jobs", json=JOB).json()["tenant"] == "default"


def test_with_keys_the_api_does_not_warn(make_api: Callable[[Settings], TestClient], settings: Settings,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        make_api(dataclasses.replace(settings, api_keys=f"{hash_key(KEY_A)}:acme"))
    assert NO_KEYS_WARNING not in caplog.text


def test_keys_never_appear_in_settings_or_logs(settings: Settings, caplog: pytest.LogCaptureFixture,
                                               make_api: Callable[[Settings], TestClient]) -> None:
    configured = dataclasses.replace(settings, api_keys=f"{hash_key(KEY_A)}:acme")
    with caplog.at_level(logging.DEBUG):
        api = make_api(configured)
        api.get("/v1/jobs/" + "0" * 32, headers=bearer(KEY_A))
        api.get("/v1/jobs/" + "0" * 32, headers=bearer(KEY_B))
    assert KEY_A not in repr(configured) and KEY_A not in str(configured.to_env())
    assert KEY_A not in caplog.text and KEY_B not in caplog.text
    assert KeyTable.from_settings(configured).tenant(KEY_A) == "acme"


# -- limits --------------------------------------------------------------------------------

def test_rate_limit_per_tenant_is_429_with_retry_after(make_api: Callable[[Settings], TestClient],
                                                      settings: Settings, backlog: Callable[[], Backlog]) -> None:
    api = make_api(dataclasses.replace(settings, api_keys=f"{hash_key(KEY_A)}:acme,{hash_key(KEY_B)}:globex",
                                       rate_limit_per_s=0.01, rate_limit_burst=3))
    codes = [api.post("/v1/jobs", json=JOB, headers=bearer(KEY_A)).status_code for _ in range(3)]
    limited = api.post("/v1/jobs", json=JOB, headers=bearer(KEY_A))

    assert codes == [202, 202, 202]
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    assert backlog() == Backlog(queued=3, records=3)  # the refused one wrote nothing
    assert api.post("/v1/jobs", json=JOB, headers=bearer(KEY_B)).status_code == 202  # its own bucket


def test_full_family_queue_is_429_and_enqueues_nothing(make_api: Callable[[Settings], TestClient],
                                                       settings: Settings, backlog: Callable[[], Backlog]) -> None:
    api = make_api(dataclasses.replace(settings, max_queued_per_family=2))
    assert [api.post("/v1/jobs", json=JOB).status_code for _ in range(2)] == [202, 202]

    full = api.post("/v1/jobs", json=JOB)

    error = assert_error(full, 429, "queue_full")
    assert "stable-diffusion" in error["message"]
    assert int(full.headers["retry-after"]) >= 1
    assert backlog() == Backlog(queued=2, records=2)


def test_jobs_in_a_live_workers_own_queue_count_toward_the_bound(make_api: Callable[[Settings], TestClient],
                                                                 settings: Settings,
                                                                 backlog: Callable[[], Backlog]) -> None:
    api = make_api(dataclasses.replace(settings, max_queued_per_family=2, routing="family"))
    store: JobStore = api.app.state.services.store  # type: ignore[attr-defined]
    Registry(store.redis, ttl_s=60).publish(WorkerInfo(name="a@h", queue=worker_queue("a@h"),
                                                       families=["stable-diffusion"], device="cpu", ready=True))
    routed = new_job_id()
    store.create(routed, family="stable-diffusion", pipeline="StableDiffusionPipeline", checkpoint="tiny-sd",
                 revision=None, task=Task.TEXT2IMAGE, spec=job_spec(),
                 message=run_message(routed, "stable-diffusion", queue=worker_queue("a@h")))
    assert store.redis.llen(priority_lists(worker_queue("a@h"))[4]) == 1  # its message waits there
    assert api.post("/v1/jobs", json=JOB).status_code == 202
    assert_error(api.post("/v1/jobs", json=JOB), 429, "queue_full")
    assert backlog() == Backlog(queued=1, records=2)


def test_a_canceled_or_started_job_frees_its_place_at_once(make_api: Callable[[Settings], TestClient],
                                                          settings: Settings) -> None:
    api = make_api(dataclasses.replace(settings, max_queued_per_family=1))
    store: JobStore = api.app.state.services.store  # type: ignore[attr-defined]
    first = api.post("/v1/jobs", json=JOB).json()["id"]
    assert_error(api.post("/v1/jobs", json=JOB), 429, "queue_full")
    assert api.post(f"/v1/jobs/{first}/cancel").status_code == 202  # its message is still in the list
    second = api.post("/v1/jobs", json=JOB).json()["id"]
    assert_error(api.post("/v1/jobs", json=JOB), 429, "queue_full")
    assert store.claim_job(second) is not None
    assert api.post("/v1/jobs", json=JOB).status_code == 202


def test_a_caller_mistake_is_still_422_when_the_queue_is_full(make_api: Callable[[Settings], TestClient],
                                                              settings: Settings) -> None:
    api = make_api(dataclasses.replace(settings, max_queued_per_family=1))
    api.post("/v1/jobs", json=JOB)
    bad = api.post("/v1/jobs", json={**JOB, "params": {"prompt": "x", "num_inference_steps": 0}})
    assert bad.status_code == 422


def test_reads_have_their_own_larger_limit(make_api: Callable[[Settings], TestClient], settings: Settings) -> None:
    """Reads spend a read bucket (429 + Retry-After past it), never the submission bucket, and
    each tenant has its own."""
    api = make_api(dataclasses.replace(settings, api_keys=f"{hash_key(KEY_A)}:acme,{hash_key(KEY_B)}:globex",
                                       rate_limit_per_s=0.01, rate_limit_burst=1,
                                       read_rate_limit_per_s=0.01, read_rate_limit_burst=4))
    job_id = api.post("/v1/jobs", json=JOB, headers=bearer(KEY_A)).json()["id"]
    reads = [api.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).status_code,
             api.get("/v1/jobs", headers=bearer(KEY_A)).status_code,
             api.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).status_code,
             api.get("/v1/jobs", headers=bearer(KEY_A)).status_code]
    limited = [api.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)), api.get("/v1/jobs", headers=bearer(KEY_A)),
               api.get(f"/v1/jobs/{job_id}/events", headers=bearer(KEY_A))]

    assert reads == [200, 200, 200, 200]
    for response in limited:
        error = assert_error(response, 429, "rate_limited")
        assert "read" in error["message"] and int(response.headers["retry-after"]) >= 1
    assert api.get("/v1/jobs", headers=bearer(KEY_B)).status_code == 200  # globex: its own bucket
    # the submission bucket (burst 1) was spent by the submit, not refilled or drained by reads
    assert_error(api.post("/v1/jobs", json=JOB, headers=bearer(KEY_A)), 429, "rate_limited")
    assert "submissions" in api.post("/v1/jobs", json=JOB, headers=bearer(KEY_A)).json()["error"]["message"]


def test_reads_are_unlimited_by_default(make_api: Callable[[Settings], TestClient], settings: Settings) -> None:
    assert settings.read_rate_limit_per_s == 0
    api = make_api(dataclasses.replace(settings, read_rate_limit_burst=1))
    assert {api.get("/v1/jobs").status_code for _ in range(5)} == {200}
