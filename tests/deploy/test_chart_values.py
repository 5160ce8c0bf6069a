"""The chart's values: bad ones fail with one clear message; the schema, the values reference and
the templates agree with the code (settings, version, names)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from hotpipe import __version__
from hotpipe.shared.settings import ENV_PREFIX, Settings
from tests.deploy.chart import CHART, ROOT, component, hotpipe_names, lint_report, of_kind, render, render_files

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("pool without family", {"workers": {"pools": {"nofamily": {"replicas": 2}}}},
     "workers.pools.nofamily: family is required"),
    ("cuda without a GPU", {"workers": {"pools": {"stable-diffusion": {"device": "cuda:0", "resources": {}}}}},
     "workers.pools.stable-diffusion.device is cuda:0 but the pool requests no GPU"),
    ("a GPU on cpu", {"workers": {"pools": {"stable-diffusion": {"device": "cpu"}}}},
     "workers.pools.stable-diffusion requests a GPU but its device is cpu"),
    ("two GPUs per pod", {"workers": {"defaults": {"resources": {"limits": {"nvidia.com/gpu": 2}}}}},
     "requests 2 nvidia.com/gpu; a worker drives one device"),
    ("a second GPU index", {"workers": {"pools": {"stable-diffusion": {"device": "cuda:1"}}}},
     "device is cuda:1: a pod sees only the GPU it requests, as cuda:0"),
    ("a chart-managed setting", {"settings": {"redis_url": "redis://elsewhere:6379/0"}},
     "settings.redis_url is set by the chart"),
    ("a cache budget that is not MiB", {"workers": {"pools": {"stable-diffusion": {"cacheBudget": "20Gi"}}}},
     "cacheBudget is 20Gi; give the pipeline cache's budget in MiB"),
    ("a batch of none", {"workers": {"pools": {"stable-diffusion": {"maxBatch": 0}}}}, "maxBatch"),
    ("a batch past the ceiling", {"workers": {"pools": {"stable-diffusion": {"maxBatch": 65}}}}, "maxBatch"),
    ("a batch that is not a number", {"workers": {"pools": {"stable-diffusion": {"maxBatch": "lots"}}}},
     "maxBatch"),
    ("max_batch as a setting", {"settings": {"max_batch": "4"}}, "settings.max_batch is set by the chart"),
    ("no Redis secret", {"redis": {"existingSecret": ""}}, "redis.existingSecret is required"),
    ("a pool name past 40 characters", {"workers": {"pools": {"p" * 41: {"family": "flux"}}}},
     "maxLength: got 41, want 40"),
    ("autoscaling bounds upside down", {"workers": {"defaults": {"autoscaling": {
        "enabled": True, "minReplicas": 5, "maxReplicas": 2}}}},
     "autoscaling.minReplicas (5) is above maxReplicas (2)"),
    ("a misspelt pool key", {"workers": {"pools": {"stable-diffusion": {"famliy": "flux"}}}},
     "additional properties 'famliy' not allowed"),
    ("an unknown setting", {"settings": {"s3_buckt": "x"}}, "invalid propertyName 's3_buckt'"),
    ("a plaintext API key", {"apiKeys": {"entries": [{"sha256": "hp_0123456789abcdef", "tenant": "acme"}]}},
     "'hp_0123456789abcdef' does not match pattern"),
    ("API keys from two places", {"apiKeys": {"existingSecret": "keys", "entries": [
        {"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "tenant": "acme"}]}},
     "apiKeys: set existingSecret or entries, not both"),
    ("the key file as a setting", {"settings": {"api_keys_file": "/keys"}},
     "settings.api_keys_file is set by the chart"),
    ("a pool name that is not a DNS label", {"workers": {"pools": {"SD_XL": {"family": "stable-diffusion-xl"}}}},
     "'SD_XL' does not match pattern"),
]


@pytest.mark.parametrize(("values", "message"), [case[1:] for case in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_bad_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


def test_every_problem_is_listed_in_one_message() -> None:
    values = {"redis": {"existingSecret": ""}, "settings": {"device": "cuda:0"},
              "workers": {"pools": {"nofamily": {"replicas": 1}}}}
    with pytest.raises(helm.HelmRenderError) as caught:
        render(values)
    problems = [line for line in str(caught.value).splitlines() if line.startswith("  - ")]
    assert len(problems) == 3, str(caught.value)


def test_the_schema_offers_exactly_the_settings_of_the_code() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    offered = schema["properties"]["settings"]["propertyNames"]["enum"]
    assert offered == [f.name for f in dataclasses.fields(Settings)], (
        "helm/hotpipe/values.schema.json settings enum must list every field of Settings, in order: "
        "run `make docs` (python -m hotpipe.config_reference)")


def test_hotpipe_names_written_in_the_chart_and_images_are_settings() -> None:
    settings = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    # NOTES.txt tells the operator to export the CLI's API address and key, which the CLI reads itself
    client = {"HOTPIPE_API_URL", "HOTPIPE_API_KEY"}
    assert all(name in (ROOT / "producer" / "hotpipe" / "producer" / "cli_client.py").read_text() for name in client)
    files = [p for p in [*CHART.rglob("*"), *(ROOT / "docker").rglob("*")] if p.is_file()]
    written = set().union(*(hotpipe_names(p.read_text()) for p in files))
    assert {"HOTPIPE_REDIS_URL", "HOTPIPE_WORKER_READY_FILE"} <= written
    assert written - client <= settings, written - client - settings


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    docs = render()
    images = [c["image"] for d in of_kind(docs, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]]
    assert images and all(image.endswith(":" + __version__) for image in images)


def test_long_release_names_stay_within_63_characters() -> None:
    pools = {"workers": {"pools": {"stable-diffusion-xl-controlnet-union": {"family": "stable-diffusion-xl"}}}}
    docs = render(pools, release="a-very-long-release-name-for-a-platform-team-that-likes-words")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert all(len(name) <= 63 and not name.endswith("-") and "--" not in name for _, name in names), names
    workers = [name for kind, name in names if kind == "Deployment" and "-worker-" in name]
    assert sorted(name.rsplit("-worker-", 1)[1] for name in workers) == [
        "stable-diffusion", "stable-diffusion-xl-controlnet-union"]


def test_settings_keep_numbers_as_written() -> None:
    docs = render({"settings": {"max_input_pixels": 16777216, "wait_max_s": 2.5}})
    data = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert (data["HOTPIPE_MAX_INPUT_PIXELS"], data["HOTPIPE_WAIT_MAX_S"]) == ("16777216", "2.5")
    assert Settings.from_env(data).max_input_pixels == 16777216


def test_worker_events_can_be_turned_off() -> None:
    """Flower's feed (heartbeats + task events) is on unless ``settings.worker_events`` says false."""
    assert "HOTPIPE_WORKER_EVENTS" not in next(d for d in render({}) if d["kind"] == "ConfigMap")["data"]
    assert Settings.from_env({}).worker_events
    data = next(d for d in render({"settings": {"worker_events": False}}) if d["kind"] == "ConfigMap")["data"]
    assert data["HOTPIPE_WORKER_EVENTS"] == "false"
    assert Settings.from_env(data).worker_events is False


def test_notes_name_every_pool_and_how_to_reach_the_api() -> None:
    notes = render_files({"workers": {"pools": {"flux": {"family": "flux"}}}})["hotpipe/templates/NOTES.txt"]
    assert "stable-diffusion: family stable-diffusion, device cuda:0" in notes
    assert "flux: family flux" in notes
    assert "port-forward svc/hp-hotpipe-api" in notes


def test_lint_reports_what_it_finds() -> None:
    report = lint_report({"api": {"replicas": "two"}})
    assert [m for m in report["messages"] if m["severity"] == 3 and "want integer" in m["error"]]


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = component(render(), "Deployment", "worker")[0]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.29.0", strict=True)
