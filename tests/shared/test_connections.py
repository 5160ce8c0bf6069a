"""Redis connections from settings: Sentinel settings parsed, clients and broker through sentinels,
and the start-up check that refuses sentinels nobody answers at or a master name nobody knows."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from hotpipe.shared.celery_app import make_celery
from hotpipe.shared.connections import (
    async_client,
    broker_transport_options,
    broker_url,
    check_redis,
    primary_options,
    sync_client,
    uses_sentinel,
)
from hotpipe.shared.settings import Settings
from tests.sentinels import MASTER_NAME, SentinelGroup

SENTINELS = {"HOTPIPE_REDIS_SENTINELS": "s1:26379, s2:26380", "HOTPIPE_REDIS_MASTER_NAME": "mymaster"}


def test_sentinels_parse_as_host_port_pairs() -> None:
    settings = Settings.from_env(SENTINELS)
    assert settings.sentinel_addresses() == [("s1", 26379), ("s2", 26380)] and uses_sentinel(settings)
    assert not uses_sentinel(Settings()) and Settings().sentinel_addresses() == []


@pytest.mark.parametrize(("env", "names"), [
    ({"HOTPIPE_REDIS_SENTINELS": "s1"}, "HOTPIPE_REDIS_SENTINELS"),
    ({"HOTPIPE_REDIS_SENTINELS": "s1:26379,s2:port"}, "HOTPIPE_REDIS_SENTINELS"),
    ({"HOTPIPE_REDIS_SENTINELS": "s1:70000"}, "HOTPIPE_REDIS_SENTINELS"),
    ({"HOTPIPE_REDIS_SENTINELS": "s1:26379", "HOTPIPE_REDIS_MASTER_NAME": " "}, "HOTPIPE_REDIS_MASTER_NAME"),
    ({"HOTPIPE_REDIS_SUBMIT_REPLICAS": "-1"}, "HOTPIPE_REDIS_SUBMIT_REPLICAS"),
    ({"HOTPIPE_REDIS_SUBMIT_WAIT_MS": "0"}, "HOTPIPE_REDIS_SUBMIT_WAIT_MS"),
])
def test_bad_redis_settings_are_refused_naming_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        Settings.from_env(env)


def test_the_primary_takes_database_and_password_from_the_url() -> None:
    settings = Settings.from_env({**SENTINELS, "HOTPIPE_REDIS_URL": "redis://app:s3cret@ignored:1/3"})
    assert primary_options(settings) == {"db": 3, "username": "app", "password": "s3cret"}
    assert broker_url(settings) == "sentinel://app:s3cret@s1:26379/3;sentinel://app:s3cret@s2:26380/3"
    assert broker_transport_options(settings)["master_name"] == "mymaster"


def test_sentinel_credentials_go_to_the_sentinels_only() -> None:
    settings = Settings.from_env({**SENTINELS, "HOTPIPE_REDIS_SENTINEL_PASSWORD": "sentinel-pw"})
    assert broker_transport_options(settings)["sentinel_kwargs"]["password"] == "sentinel-pw"
    assert "password" not in primary_options(settings) and "sentinel-pw" not in broker_url(settings)


def test_without_sentinels_the_url_is_the_broker() -> None:
    settings = Settings.from_env({"HOTPIPE_REDIS_URL": "redis://r:6379/2"})
    assert (broker_url(settings), broker_transport_options(settings)) == ("redis://r:6379/2", {})
    assert "master_name" not in make_celery(settings).conf.broker_transport_options


def test_clients_and_broker_reach_the_primary_through_sentinels(sentinel_group: SentinelGroup) -> None:
    settings = Settings.from_env(sentinel_group.env())
    client = sync_client(settings, decode_responses=True)
    client.set("hotpipe-test:through-sentinel", "yes")
    assert client.info("server")["tcp_port"] == sentinel_group.primary_address()[1]

    async def read() -> object:
        aclient = async_client(settings, decode_responses=True)
        try:
            return await aclient.get("hotpipe-test:through-sentinel")
        finally:
            await aclient.aclose()

    assert asyncio.run(read()) == "yes"
    with make_celery(settings).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.default_channel.client.info("server")["tcp_port"] == sentinel_group.primary_address()[1]


def test_a_known_master_name_passes_the_start_check(sentinel_group: SentinelGroup) -> None:
    check_redis(Settings.from_env(sentinel_group.env()))
    check_redis(Settings())  # a plain URL is not checked at start (the services wait for it)


def test_an_unknown_master_name_is_refused_at_start(sentinel_group: SentinelGroup) -> None:
    settings = Settings.from_env({**sentinel_group.env(), "HOTPIPE_REDIS_MASTER_NAME": "not-" + MASTER_NAME})
    with pytest.raises(ValueError, match=f"HOTPIPE_REDIS_MASTER_NAME='not-{MASTER_NAME}'.*they know: {MASTER_NAME}"):
        check_redis(settings)


@pytest.mark.parametrize("where", ["nothing", "a plain redis"])
def test_sentinels_nobody_answers_at_are_refused_at_start(sentinel_group: SentinelGroup, where: str) -> None:
    # port 1: nothing listens; the primary's port: a Redis that is no sentinel (SENTINEL is unknown to it)
    address = "127.0.0.1:1" if where == "nothing" else f"127.0.0.1:{sentinel_group.primary_port}"
    with pytest.raises(ValueError, match=f"HOTPIPE_REDIS_SENTINELS='{address}': no sentinel answered"):
        check_redis(Settings.from_env({**sentinel_group.env(), "HOTPIPE_REDIS_SENTINELS": address}))


@pytest.mark.parametrize("command", [["api", "--port", "1"], ["worker", "--family", "stable-diffusion"], ["reaper"],
                                     ["webhooks"]])
def test_the_services_refuse_to_start_on_unusable_sentinels(sentinel_group: SentinelGroup,
                                                            command: list[str]) -> None:
    env = {**sentinel_group.env(), "HOTPIPE_REDIS_MASTER_NAME": "nobody-knows-me"}
    proc = subprocess.run([sys.executable, "-m", "hotpipe", *command], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert proc.returncode == 2, proc.stderr
    assert "error: HOTPIPE_REDIS_MASTER_NAME='nobody-knows-me'" in proc.stderr

