"""The Celery app's CLI entry (``celery -A hotpipe``), node names, and the live-name check."""

from __future__ import annotations

import importlib
import socket
import sys

import pytest
from celery import Celery
from celery.app.utils import find_app

from hotpipe.devstack import free_port
from hotpipe.shared.celery_app import make_celery, node_is_live, node_name
from hotpipe.shared.settings import Settings


def test_the_default_node_name_is_unique_per_process() -> None:
    host = socket.gethostname()
    assert node_name(None, 4242) == f"hotpipe-4242@{host}"
    assert node_name(None, 4242) != node_name(None, 4243)
    assert node_name("gpu0@%h", 4242) == f"gpu0@{host}"
    assert node_name("gpu0", 4242) == "celery@gpu0"  # Celery's own reading of a name without "@"


def test_celery_dash_a_hotpipe_finds_the_app_built_from_settings_at_first_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sys.modules.pop("hotpipe.celery", None)
    monkeypatch.setenv("HOTPIPE_REDIS_URL", "redis://127.0.0.1:1/0")
    module = importlib.import_module("hotpipe.celery")
    module._cli_app.cache_clear()
    monkeypatch.setenv("HOTPIPE_REDIS_URL", "redis://127.0.0.1:2/7")  # read when the app is asked for
    app = find_app("hotpipe")
    assert isinstance(app, Celery)
    assert app.conf.broker_url == "redis://127.0.0.1:2/7"
    assert app.conf.worker_send_task_events is True
    assert find_app("hotpipe.celery") is app
    monkeypatch.setenv("HOTPIPE_WORKER_EVENTS", "false")
    assert make_celery(Settings.from_env()).conf.worker_send_task_events is False
    assert not hasattr(module, "other")


def test_no_live_worker_answers_a_name(redis_server: str) -> None:
    assert not node_is_live(make_celery(Settings.from_env({}, redis_url=redis_server)), "nobody@nowhere", 0.3)


def test_an_unreachable_broker_is_not_a_live_name() -> None:
    app = make_celery(Settings.from_env({}, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    assert not node_is_live(app, "nobody@nowhere", 0.3)
