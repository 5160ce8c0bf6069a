"""Keys and tenants end to end: an API process with keys configured, over the session's stack.

The keys reach the API as an operator would give them (hashes in ``HOTPIPE_API_KEYS``);
the job is run by the stack's own worker, which needs no key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotpipe.devstack import LocalStack, start_api
from hotpipe.producer.auth import hash_key, new_key
from hotpipe.producer.client import APIError, Client
from hotpipe.shared.status import Status

pytestmark = pytest.mark.e2e

KEY_A, KEY_B = new_key(), new_key()
JOB = {"checkpoint": "tiny-sd", "task": "text2image",
       "params": {"prompt": "a tenant's cube", "num_inference_steps": 2, "height": 32, "width": 32, "seed": 1}}


@pytest.fixture(scope="module")
def keyed_api(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**stack.env(), "HOTPIPE_API_KEYS": f"{hash_key(KEY_A)}:acme,{hash_key(KEY_B)}:globex"}
    workdir: Path = tmp_path_factory.mktemp("keyed-api")
    proc, url = start_api(workdir, env)
    try:
        yield url
        assert "NO API KEYS CONFIGURED" not in proc.log_path.read_text()
    finally:
        proc.stop()


def test_tenants_see_only_their_own_jobs(keyed_api: str) -> None:
    with Client(keyed_api, api_key=KEY_A) as acme, Client(keyed_api, api_key=KEY_B) as globex, \
            Client(keyed_api) as nobody:
        submitted = acme.submit(JOB)
        with pytest.raises(APIError) as no_key:
            nobody.get(submitted.id)
        with pytest.raises(APIError) as other_tenant:
            globex.get(submitted.id)
        done = acme.wait(submitted.id, timeout_s=120)

    assert submitted.tenant == "acme"
    assert (no_key.value.status, no_key.value.code) == (401, "unauthorized")
    assert (other_tenant.value.status, other_tenant.value.code) == (404, "not_found")
    assert done.status is Status.SUCCEEDED and done.tenant == "acme", done.error


def test_the_local_stack_without_keys_warns_loudly(stack: LocalStack) -> None:
    api_log = stack.procs["api"].log_path.read_text()
    assert "NO API KEYS CONFIGURED" in api_log


def cli(*args: str, env_key: str | None = None) -> subprocess.CompletedProcess[str]:
    """``hotpipe ARGS`` in a fresh process; ``env_key`` is its ``HOTPIPE_API_KEY`` (else unset)."""
    env = {k: v for k, v in os.environ.items() if k != "HOTPIPE_API_KEY"}
    if env_key is not None:
        env["HOTPIPE_API_KEY"] = env_key
    return subprocess.run([sys.executable, "-m", "hotpipe", *args], env=env, capture_output=True, text=True,
                          timeout=180)


def test_the_cli_needs_a_key_from_its_flag_or_the_environment(keyed_api: str) -> None:
    job = ["--checkpoint", "tiny-sd", "--prompt", "a cli cube", "--steps", "2", "--height", "32", "--width", "32"]
    refused_list = cli("jobs", "--api", keyed_api)
    refused_submit = cli("submit", "--api", keyed_api, *job)
    wrong_flag_wins = cli("jobs", "--api", keyed_api, "--api-key", "hp_not-a-key", env_key=KEY_A)
    submitted = cli("submit", "--api", keyed_api, "--api-key", KEY_A, "--wait", "--json", *job)
    job_id = json.loads(submitted.stdout)["id"] if submitted.returncode == 0 else ""
    shown = cli("status", job_id, "--api", keyed_api, "--json", env_key=KEY_A)
    listed = cli("jobs", "--api", keyed_api, "--json", "--api-key", KEY_A)
    other_tenant = cli("cancel", job_id, "--api", keyed_api, env_key=KEY_B)
    fleet = cli("workers", "--api", keyed_api, "--json", env_key=KEY_B)

    for refused in (refused_list, refused_submit, wrong_flag_wins):
        assert refused.returncode == 2, refused
        assert "unauthorized" in refused.stderr and "--api-key" in refused.stderr, refused.stderr
        assert "HOTPIPE_API_KEY" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert submitted.returncode == 0, submitted.stderr
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert (record["id"], record["status"], record["tenant"]) == (job_id, "succeeded", "acme")
    assert listed.returncode == 0 and job_id in {json.loads(line)["id"] for line in listed.stdout.splitlines()}
    assert other_tenant.returncode == 2 and "not_found" in other_tenant.stderr, other_tenant.stderr
    assert fleet.returncode == 0 and json.loads(fleet.stdout)["workers"], fleet.stderr
    runs = (refused_list, refused_submit, wrong_flag_wins, submitted, shown, listed, other_tenant, fleet)
    assert not [r.args for r in runs if KEY_A in r.stdout + r.stderr or KEY_B in r.stdout + r.stderr]
