"""Several API processes: each worker process rebuilds the settings, and /metrics merges every
process's counters (prometheus_client's multiprocess files), whichever process is scraped.

Two real child processes serve requests with their own app; this process then scrapes an app
of its own over the same directory.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hotpipe.devstack import LOCAL_AWS_ENV
from hotpipe.producer.metrics import MULTIPROC_ENV
from hotpipe.producer.serve import app_from_env
from hotpipe.shared.settings import Settings

FAMILY = "stable-diffusion"
#: one API worker process: its own app from the environment, some requests, then it exits
CHILD = """
from fastapi.testclient import TestClient
from hotpipe.producer.serve import app_from_env
with TestClient(app_from_env()) as client:
    for _ in range({n}):
        assert client.get("/v1/queues/{family}").status_code == 200
    assert client.get("/v1/queues/no-such-family").status_code == 404
"""


def requests_counted(text: str, route: str, status: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "hotpipe_http_requests_total" and s.labels.get("route") == route
               and s.labels.get("status") == status)


def test_metrics_merge_the_counts_of_every_api_process(settings: Settings, tmp_path: Path,
                                                       make_api: Callable[[Settings], TestClient],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, **LOCAL_AWS_ENV, **settings.to_env(), MULTIPROC_ENV: str(tmp_path),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", CHILD.format(n=n, family=FAMILY)], env=env, check=True, timeout=120)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2, "each process wrote its own counter file"

    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    text = make_api(settings).get("/metrics").text
    assert requests_counted(text, "/v1/queues/{family}", "200") == 7
    assert requests_counted(text, "/v1/queues/{family}", "404") == 2
    assert "hotpipe_queue_depth" in text and "hotpipe_redis_up 1.0" in text  # read from Redis at scrape


def test_a_worker_process_builds_its_app_from_the_environment(settings: Settings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**settings.to_env(), "HOTPIPE_MAX_STEPS": "7", "HOTPIPE_API_LOG_LEVEL": "warning"}.items():
        monkeypatch.setenv(name, value)
    for name, value in LOCAL_AWS_ENV.items():
        monkeypatch.setenv(name, os.environ.get(name, value))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        app = app_from_env()
        assert root.level == logging.WARNING
    finally:  # app_from_env configures the process's logging: give pytest's back
        root.handlers[:] = handlers
        root.setLevel(level)
    assert app.state.services.settings.max_steps == 7
    assert app.state.services.settings.api_log_level == "warning"


@pytest.mark.parametrize(("name", "value"), [("HOTPIPE_API_WORKERS", "0"), ("HOTPIPE_API_LOG_LEVEL", "loud")])
def test_bad_serving_settings_are_refused_at_start(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})
