"""Fixtures that start real services: redis-server, an S3 server (moto, own process), workers.

A missing service makes the fixture raise — the test fails, it is never skipped.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hotpipe.devstack import LocalStack, Proc, find_redis_server, local_storage, start_redis, start_s3
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from tests.hub_server import fill_hub, start_hub
from tests.sentinels import SentinelGroup, start_group


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real redis-server started for this test session."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"), find_redis_server("system"))
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A primary, one replica and one sentinel (real processes) for tests that fail nothing over."""
    group = start_group(tmp_path_factory.mktemp("sentinel"), find_redis_server("system"), replicas=1, sentinels=1)
    yield group
    group.close()


@pytest.fixture
def redis_client(redis_server: str) -> Iterator[redis.Redis]:
    """A client on a freshly flushed database of the session's redis-server."""
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint of a real S3-compatible HTTP server (moto in server mode, its own process)."""
    proc: Proc
    proc, url = start_s3(tmp_path_factory.mktemp("s3"))
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model root holding the tiny checkpoints, built offline by the project command."""
    root = tmp_path_factory.mktemp("models")
    subprocess.run([sys.executable, "-m", "hotpipe", "dev", "make-checkpoints", str(root)], check=True,
                   capture_output=True)
    return root


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Iterator[str]:
    """URL of a Hugging Face Hub on loopback (its own process) serving ``hub_server.HUB_REPOS``."""
    root = tmp_path_factory.mktemp("hub")
    fill_hub(root / "repos", model_root)
    proc, url = start_hub(root / "repos", root)
    yield url
    proc.stop()


@pytest.fixture
def settings(redis_server: str, s3_server: str, model_root: Path) -> Settings:
    return Settings.from_env({}, redis_url=redis_server, s3_endpoint_url=s3_server, model_root=model_root,
                             s3_bucket="hotpipe-test", s3_prefix="jobs")


#: the stack's webhook key; its webhooks may go to loopback, where the tests' receivers listen
STACK_WEBHOOK_SECRET = "stack-webhook-secret"
STACK_ENV = {"HOTPIPE_PROGRESS_INTERVAL_S": "0", "HOTPIPE_WEBHOOK_SECRET": STACK_WEBHOOK_SECRET,
             "HOTPIPE_WEBHOOK_ALLOW_PRIVATE": "true", "HOTPIPE_WEBHOOK_BACKOFF_S": "0.2",
             "HOTPIPE_WEBHOOK_PROGRESS_INTERVAL_S": "0", "HOTPIPE_REAPER_INTERVAL_S": "1",
             # two API processes on one port, as `hotpipe api --workers 2`: every e2e test that uses this
             # stack goes through either (other stacks run one, the default)
             "HOTPIPE_API_WORKERS": "2"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Iterator[LocalStack]:
    """The whole local stack as separate processes: redis, S3, API and one Celery worker."""
    with LocalStack(tmp_path_factory.mktemp("stack"), model_root, redis_binary=find_redis_server("system"),
                    extra_env=STACK_ENV) as s:
        yield s


@pytest.fixture
def storage(settings: Settings) -> Storage:
    """Storage on the session's S3 server, bucket created."""
    st = local_storage(settings)
    st.ensure_bucket()
    return st
