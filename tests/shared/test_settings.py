"""Settings from HOTPIPE_* variables: parsing, overrides, errors, round trip and the reference table."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from hotpipe.shared.settings import Settings, reference_table


@pytest.mark.parametrize(("var", "raw", "name", "value"), [
    ("HOTPIPE_MAX_STEPS", "20", "max_steps", 20),
    ("HOTPIPE_TORCH_THREADS", "-1", "torch_threads", -1),
    ("HOTPIPE_WAIT_MAX_S", "2.5", "wait_max_s", 2.5),
    ("HOTPIPE_PROGRESS_INTERVAL_S", "0", "progress_interval_s", 0.0),
    ("HOTPIPE_MODEL_ROOT", "/srv/models", "model_root", Path("/srv/models")),
    ("HOTPIPE_WORKER_READY_FILE", "/run/ready", "worker_ready_file", Path("/run/ready")),
    ("HOTPIPE_WORKER_READY_FILE", "", "worker_ready_file", None),
    ("HOTPIPE_S3_ENDPOINT_URL", "http://s3:9000", "s3_endpoint_url", "http://s3:9000"),
    ("HOTPIPE_S3_ENDPOINT_URL", "", "s3_endpoint_url", None),
    ("HOTPIPE_S3_PREFIX", "", "s3_prefix", ""),
    ("HOTPIPE_DEVICE", "cuda:0", "device", "cuda:0"),
])
def test_from_env_parses_each_kind(var: str, raw: str, name: str, value: Any) -> None:
    got = getattr(Settings.from_env({var: raw}), name)
    assert got == value and type(got) is type(value)


def test_unset_variables_keep_the_defaults() -> None:
    assert Settings.from_env({"UNRELATED": "1", "hotpipe_max_steps": "3"}) == Settings()


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTPIPE_MAX_IMAGES", "2")
    assert Settings.from_env().max_images == 2


def test_overrides_win_over_the_environment() -> None:
    s = Settings.from_env({"HOTPIPE_MAX_STEPS": "20", "HOTPIPE_DEVICE": "cuda:1"}, max_steps=7)
    assert (s.max_steps, s.device) == (7, "cuda:1")


@pytest.mark.parametrize(("var", "raw"), [
    ("HOTPIPE_MAX_STEPS", "many"),
    ("HOTPIPE_MAX_STEPS", "2.5"),
    ("HOTPIPE_WAIT_MAX_S", "soon"),
])
def test_bad_number_names_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ValueError, match=f"{var}={raw!r} is not a valid"):
        Settings.from_env({var: raw})


@pytest.mark.parametrize("var", ["HOTPIPE_RECORD_TTL_S", "HOTPIPE_MODEL_ROOT", "HOTPIPE_WAIT_MAX_S"])
def test_empty_required_value_is_refused(var: str) -> None:
    with pytest.raises(ValueError, match=f"{var} is empty; unset it"):
        Settings.from_env({var: ""})


def test_empty_optional_value_means_unset() -> None:
    assert Settings.from_env({"HOTPIPE_S3_ENDPOINT_URL": "", "HOTPIPE_S3_PREFIX": ""}).s3_endpoint_url is None


@pytest.mark.parametrize("original", [
    Settings(),
    Settings(s3_endpoint_url="http://127.0.0.1:9000", model_root=Path("/m"), max_steps=3, wait_max_s=0.5,
             worker_ready_file=Path("/tmp/ready"), device="cuda:0", s3_prefix=""),
])
def test_to_env_round_trips(original: Settings) -> None:
    env = original.to_env()
    assert all(k.startswith("HOTPIPE_") and isinstance(v, str) for k, v in env.items())
    assert Settings.from_env(env) == original


def test_to_env_leaves_out_unset_optionals() -> None:
    env = Settings().to_env()
    assert "HOTPIPE_S3_ENDPOINT_URL" not in env and "HOTPIPE_WORKER_READY_FILE" not in env
    assert env["HOTPIPE_MAX_STEPS"] == "150"


def test_reference_table_covers_every_field() -> None:
    rows = reference_table()
    fields = dataclasses.fields(Settings)
    assert [var for var, _, _ in rows] == [f"HOTPIPE_{f.name.upper()}" for f in fields]
    assert [default for _, default, _ in rows] == [repr(f.default) for f in fields]
    assert all(meaning.strip() for _, _, meaning in rows)


@pytest.mark.parametrize(("var", "raw"), [
    ("HOTPIPE_LEASE_S", "0"),
    ("HOTPIPE_LEASE_S", "-3"),
    ("HOTPIPE_LEASE_S", "inf"),
    ("HOTPIPE_LEASE_S", "nan"),
    ("HOTPIPE_REAPER_INTERVAL_S", "0"),
    ("HOTPIPE_MAX_ATTEMPTS", "0"),
    ("HOTPIPE_SHUTDOWN_GRACE_S", "-1"),
    ("HOTPIPE_STALE_QUEUED_S", "-1"),
    ("HOTPIPE_STALE_QUEUED_S", "inf"),
])
def test_recovery_settings_out_of_range_name_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ValueError, match=f"{var} is .*; it must be"):
        Settings.from_env({var: raw})


def test_recovery_settings_parse() -> None:
    s = Settings.from_env({"HOTPIPE_LEASE_S": "3", "HOTPIPE_REAPER_INTERVAL_S": "0.5", "HOTPIPE_MAX_ATTEMPTS": "2",
                           "HOTPIPE_SHUTDOWN_GRACE_S": "0"})
    assert (s.lease_s, s.reaper_interval_s, s.max_attempts, s.shutdown_grace_s) == (3.0, 0.5, 2, 0.0)


@pytest.mark.parametrize(("var", "raw", "says"), [
    ("HOTPIPE_LOG_FORMAT", "yaml", "use one of text, json"),
    ("HOTPIPE_LOG_FORMAT", "JSON", "use one of text, json"),
    ("HOTPIPE_WORKER_METRICS_PORT", "70000", r"use a TCP port \(1-65535\), or 0 to turn worker metrics off"),
    ("HOTPIPE_WORKER_METRICS_PORT", "-1", r"use a TCP port \(1-65535\), or 0 to turn worker metrics off"),
])
def test_observability_settings_out_of_range_name_the_variable(var: str, raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=f"{var} is .*; {says}"):
        Settings.from_env({var: raw})


def test_observability_settings_parse() -> None:
    s = Settings.from_env({"HOTPIPE_LOG_FORMAT": "json", "HOTPIPE_WORKER_METRICS_PORT": "0"})
    assert (s.log_format, s.worker_metrics_port) == ("json", 0)
    assert (Settings().log_format, Settings().worker_metrics_port) == ("text", 9464)


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("1", True), ("YES", True), ("false", False),
                                            ("0", False), ("off", False)])
def test_boolean_settings_parse(raw: str, value: bool) -> None:
    assert Settings.from_env({"HOTPIPE_ALLOW_PICKLE_WEIGHTS": raw}).allow_pickle_weights is value


def test_a_boolean_that_is_not_one_names_the_variable() -> None:
    with pytest.raises(ValueError, match="HOTPIPE_ALLOW_HTTP_INPUTS"):
        Settings.from_env({"HOTPIPE_ALLOW_HTTP_INPUTS": "maybe"})


def test_safety_and_limit_defaults_are_the_safe_ones() -> None:
    s = Settings.from_env({})
    assert (s.allow_pickle_weights, s.allow_http_inputs, s.checkpoint_allowlist) == (False, False, None)
    assert s.job_time_limit_s > 0 and s.api_keys is None


@pytest.mark.parametrize(("var", "raw"), [("HOTPIPE_JOB_TIME_LIMIT_S", "-1"), ("HOTPIPE_RATE_LIMIT_PER_S", "-1"),
                                          ("HOTPIPE_RATE_LIMIT_BURST", "0"), ("HOTPIPE_READ_RATE_LIMIT_PER_S", "nan"),
                                          ("HOTPIPE_READ_RATE_LIMIT_BURST", "0")])
def test_limits_out_of_range_are_refused(var: str, raw: str) -> None:
    with pytest.raises(ValueError, match=var.removesuffix("_BURST").removesuffix("_PER_S")):
        Settings.from_env({var: raw})


def test_hot_cache_and_routing_settings() -> None:
    s = Settings.from_env({"HOTPIPE_FAMILY_DTYPES": "flux=bfloat16, stable-diffusion=float16",
                           "HOTPIPE_PRELOAD": "tiny-sd, other,", "HOTPIPE_CACHE_BUDGET_MB": "2048"})
    assert s.family_dtype_map() == {"flux": "bfloat16", "stable-diffusion": "float16"}
    assert s.preload_list() == ["tiny-sd", "other"] and s.cache_budget_mb == 2048
    assert s.cache_policy == "popular"  # evict what the fleet asks for least (BENCHMARKS.md, affinity)


@pytest.mark.parametrize(("env", "says"), [
    ({"HOTPIPE_FAMILY_DTYPES": "flux=fp8"}, "write family=dtype"),
    ({"HOTPIPE_FAMILY_DTYPES": "bfloat16"}, "write family=dtype"),
    ({"HOTPIPE_ROUTING": "random"}, "HOTPIPE_ROUTING is 'random'; use one of affinity, family"),
    ({"HOTPIPE_CACHE_POLICY": "fifo"}, "use one of popular, lfu, lru"),
    ({"HOTPIPE_WORKER_TTL_S": "0"}, "HOTPIPE_WORKER_TTL_S is 0.0"),
    ({"HOTPIPE_POPULARITY_HALF_LIFE_S": "0"}, "HOTPIPE_POPULARITY_HALF_LIFE_S is 0.0"),
])
def test_bad_hot_cache_and_routing_settings_are_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        Settings.from_env(env)


@pytest.mark.parametrize("env", [{"HOTPIPE_WORKER_TTL_S": "1"},  # the default heartbeat is 1 s
                                 {"HOTPIPE_WORKER_TTL_S": "3", "HOTPIPE_WORKER_HEARTBEAT_S": "5"}])
def test_a_silence_window_not_longer_than_the_heartbeat_is_refused_naming_both(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"HOTPIPE_WORKER_TTL_S .* must be longer than HOTPIPE_WORKER_HEARTBEAT_S"):
        Settings.from_env(env)


def test_recovery_defaults_put_a_dead_worker_s_job_back_within_ten_seconds() -> None:
    s = Settings.from_env({})
    assert (s.worker_heartbeat_s, s.worker_ttl_s, s.reaper_interval_s) == (1.0, 6.0, 2.0)
    assert s.worker_ttl_s + s.reaper_interval_s <= 10  # the bound ARCHITECTURE.md states


def test_max_batch_defaults_per_device_type() -> None:
    assert Settings.from_env({}).batch_limit() == 1  # CPU: one job per call, no queue scan
    assert Settings.from_env({"HOTPIPE_DEVICE": "cuda:0"}).batch_limit() == 8
    assert Settings.from_env({"HOTPIPE_MAX_BATCH": "4", "HOTPIPE_BATCH_WAIT_MS": "20"}).batch_limit() == 4
    assert Settings.from_env({"HOTPIPE_MAX_BATCH": "64"}).batch_wait_ms == 0.0


@pytest.mark.parametrize(("env", "says"), [
    ({"HOTPIPE_MAX_BATCH": "0"}, "HOTPIPE_MAX_BATCH is 0; use a whole number of images from 1"),
    ({"HOTPIPE_MAX_BATCH": "-2"}, "HOTPIPE_MAX_BATCH is -2"),
    ({"HOTPIPE_MAX_BATCH": "2.5"}, "HOTPIPE_MAX_BATCH is '2.5'; use a whole number"),
    ({"HOTPIPE_MAX_BATCH": "many"}, "HOTPIPE_MAX_BATCH is 'many'"),
    ({"HOTPIPE_MAX_BATCH": "65"}, "HOTPIPE_MAX_BATCH is 65; .* to 64, or auto"),
    ({"HOTPIPE_BATCH_WAIT_MS": "-1"}, "HOTPIPE_BATCH_WAIT_MS is -1.0"),
    ({"HOTPIPE_BATCH_WAIT_MS": "inf"}, "HOTPIPE_BATCH_WAIT_MS is inf"),
    ({"HOTPIPE_BATCH_WAIT_MS": "10001"}, "HOTPIPE_BATCH_WAIT_MS is 10001; .* under a third of HOTPIPE_LEASE_S"),
])
def test_bad_batching_settings_are_refused_naming_the_variable(env: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Settings.from_env(env)
