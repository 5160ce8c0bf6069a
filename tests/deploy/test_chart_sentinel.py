"""Redis Sentinel in the chart: the README's values render the sentinels, the master name and the
sentinels' password (from the Redis Secret) into the API and every worker, in the form the
settings parse; without sentinels nothing is added; bad sentinel values fail clearly."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from hotpipe.shared.settings import Settings
from tests.deploy.chart import CHART, Manifest, component, env_values, only_container, render

SENTINEL_ENV = ("HOTPIPE_REDIS_SENTINELS", "HOTPIPE_REDIS_MASTER_NAME", "HOTPIPE_REDIS_SENTINEL_PASSWORD")


def readme_values() -> dict[str, Any]:
    """The hotpipe values of the chart README's Sentinel section (``# hotpipe-sentinel.yaml``)."""
    readme = (CHART / "README.md").read_text()
    block = readme.split("# hotpipe-sentinel.yaml\n", 1)[1].split("```", 1)[0]
    values: dict[str, Any] = yaml.safe_load(block)
    return values


def deployments(docs: list[Manifest]) -> list[Manifest]:
    return component(docs, "Deployment", "api") + component(docs, "Deployment", "worker")


def test_the_readme_values_put_the_sentinels_in_every_process() -> None:
    values = readme_values()
    docs = render(values)
    for deployment in deployments(docs):
        env = env_values(only_container(deployment))
        assert env["HOTPIPE_REDIS_SENTINELS"] == ",".join(values["redis"]["sentinel"]["hosts"])
        assert env["HOTPIPE_REDIS_MASTER_NAME"] == "mymaster"
        assert env["HOTPIPE_REDIS_SENTINEL_PASSWORD"] == {"secretKeyRef": {"name": "hotpipe-redis",
                                                                           "key": "password"}}
        literal = {name: value for name, value in env.items() if isinstance(value, str)}
        settings = Settings.from_env(literal)
        assert len(settings.sentinel_addresses()) == 3 and settings.redis_submit_replicas in (0, 1)


def test_without_sentinels_the_url_alone_is_rendered() -> None:
    for deployment in deployments(render()):
        env = env_values(only_container(deployment))
        assert "HOTPIPE_REDIS_URL" in env and not set(SENTINEL_ENV) & set(env)


@pytest.mark.parametrize(("values", "message"), [
    ({"redis": {"sentinel": {"hosts": ["redis-headless"]}}}, "does not match pattern"),
    ({"redis": {"sentinel": {"hosts": ["redis:26379"], "masterName": ""}}}, "minLength"),
    ({"settings": {"redis_sentinels": "redis:26379"}}, "settings.redis_sentinels is set by the chart"),
])
def test_bad_sentinel_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)
