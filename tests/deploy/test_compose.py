"""The local stack's compose file: Redis with AOF, an S3 server with its bucket, the API, one worker."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import yaml

from hotpipe.cli import build_parser
from hotpipe.shared.families import LOOKUP_ORDER
from hotpipe.shared.settings import ENV_PREFIX, Settings
from tests.deploy.dockerfile import DOCKER

COMPOSE = DOCKER / "compose.yaml"


def services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return loaded


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's variables, with ${VAR:-default} read as its default."""
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in service.get("environment", {}).items()}


def test_the_stack_has_redis_s3_a_bucket_the_api_and_one_worker() -> None:
    stack = services()
    assert {"redis", "s3", "s3-init", "api", "worker"} <= set(stack)
    assert [name for name, s in stack.items() if s.get("command", [""])[0] == "worker"] == ["worker"]


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = services()["redis"]
    command = redis["command"]
    assert command[0] == "redis-server" and command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_images_build_from_the_dockerfiles_here() -> None:
    for name in ("api", "worker"):
        build = services()[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()


def test_the_api_and_worker_wait_for_redis_and_the_bucket() -> None:
    stack = services()
    assert "ensure_bucket()" in stack["s3-init"]["command"][0]
    for name in ("api", "worker"):
        depends = stack[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["s3-init"]["condition"] == "service_completed_successfully"


def test_commands_parse_and_the_worker_serves_a_known_family() -> None:
    parser = build_parser()
    worker = parser.parse_args(services()["worker"]["command"])
    assert worker.family == ["stable-diffusion"]
    assert all(any(f in table for table in LOOKUP_ORDER) for f in worker.family)
    parser.parse_args(services()["models-init"]["command"])


def test_the_worker_gives_its_job_back_before_compose_kills_it() -> None:
    worker = services()["worker"]
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace, worker["stop_grace_period"]
    assert Settings.from_env(environment(worker)).shutdown_grace_s < int(grace.group(1))


def test_environment_is_real_settings() -> None:
    names = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    for name in ("api", "worker", "s3-init"):
        env = environment(services()[name])
        assert {k for k in env if k.startswith(ENV_PREFIX)} <= names
        settings = Settings.from_env(env)
        assert (settings.redis_url, settings.s3_endpoint_url) == ("redis://redis:6379/0", "http://s3:5000")
    assert Settings.from_env(environment(services()["worker"])).device == "cpu"
