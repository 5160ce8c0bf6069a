"""schemathesis against the API's own OpenAPI schema: whatever it sends, never a server error.

The API runs as a real process on a real port, over the session stack's redis-server and
S3 server, on a database of its own (so nothing it accepts reaches the session's worker).
Only the ``not_a_server_error`` check is asserted: the contract says caller mistakes are
4xx, and that is what fuzzing can hold it to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok

from hotpipe.devstack import LocalStack, start_api

pytestmark = pytest.mark.e2e
#: a database of the session's redis-server that no worker consumes
FUZZ_DB = 3
#: generated requests per operation
EXAMPLES = 60


@pytest.fixture(scope="module")
def api_schema(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    redis_url = stack.settings.redis_url.rsplit("/", 1)[0] + f"/{FUZZ_DB}"
    proc, url = start_api(tmp_path_factory.mktemp("fuzzed-api"), {**stack.env(), "HOTPIPE_REDIS_URL": redis_url})
    try:
        yield schemathesis.openapi.from_url(url + "/openapi.json")
        assert "Traceback" not in proc.log_path.read_text(errors="replace"), proc.log_tail(80)
    finally:
        proc.stop()


def test_no_request_makes_a_server_error(api_schema: schemathesis.BaseSchema) -> None:
    results = list(api_schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), [r.err() for r in results if isinstance(r, Err)]
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert {op.path for op in operations} >= {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel"}
    statuses: Counter[int] = Counter()
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: schemathesis.Case) -> None:
            statuses[case.call_and_validate(checks=[not_a_server_error], timeout=90).status_code] += 1

        fuzz()
    print("statuses seen:", dict(statuses))
    assert sum(statuses.values()) >= 10 * len(operations)
    assert not any(code >= 500 for code in statuses)
    assert any(400 <= code < 500 for code in statuses)
