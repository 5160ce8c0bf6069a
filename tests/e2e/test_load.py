"""The load scenario, small: 100 jobs from 10 concurrent clients; none lost, none done twice.

The same code as ``benchmarks/load.py`` (which runs 2,000 jobs and reports the figures),
on the session's stack.  Puts are counted as S3 object versions (versioning is on).
"""

from __future__ import annotations

import pytest

from benchmarks.load import run_load
from hotpipe.devstack import LocalStack

pytestmark = pytest.mark.e2e


def test_a_hundred_concurrent_jobs_all_finish_once(stack: LocalStack) -> None:
    report = run_load(stack, jobs=100, clients=10, timeout_s=600, client="sdk")
    print("\n".join(report.lines()))

    assert report.lost == []
    assert report.statuses == {"succeeded": 100}
    assert report.written_twice == []
    assert report.succeeded_without_image == []
