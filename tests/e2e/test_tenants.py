"""Keys and tenants end to end: an API process with keys configured, over the session's stack.

The keys reach the API as an operator would give them (hashes in ``HOTPIPE_API_KEYS``);
the job is run by the stack's own worker, which needs no key.
"""

from __future__ import annotations

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
