"""The READMEs: the chart's values table documents every value in values.yaml and nothing else;
the project README's Kubernetes walkthrough renders."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.chart import CHART, ROOT, component, of_kind, render

#: values passed through as written (pod spec fragments, maps of names); documented as one row
OPAQUE = {"settings", "resources", "nodeSelector", "tolerations", "affinity", "env", "podAnnotations", "strategy",
          "cacheVolume", "volume", "podSecurityContext", "securityContext", "annotations", "labels", "hosts", "tls",
          "imagePullSecrets", "pools", "preload"}
#: rows about the pools map itself
POOL_ROWS = {"workers.pools.<name>.family"}


def value_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = prefix + key
        if isinstance(value, dict) and key not in OPAQUE:
            paths |= value_paths(value, path + ".")
        else:
            paths.add(path)
    return paths


def documented_paths() -> set[str]:
    readme = (CHART / "README.md").read_text()
    table = readme.split("## Values", 1)[1]
    return set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE))


def test_every_value_has_a_row_and_every_row_a_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    paths = value_paths(values)
    assert "workers.defaults.autoscaling.queuedJobsPerReplica" in paths
    documented = documented_paths()
    assert paths - documented == set(), "values missing from helm/hotpipe/README.md"
    assert documented - paths - POOL_ROWS == set(), "README rows for values that don't exist"


def test_the_walkthrough_in_the_project_readme_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    fleet = yaml.safe_load(readme.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0])
    docs = render(fleet, release="hotpipe")  # helm install hotpipe ...
    workers = component(docs, "Deployment", "worker")
    assert sorted(d["metadata"]["labels"]["hotpipe.io/pool"] for d in workers) == ["sdxl", "stable-diffusion"]
    assert len(of_kind(docs, "ScaledObject")) == 2 and len(of_kind(docs, "Ingress")) == 1
    assert len(of_kind(docs, "ServiceMonitor")) == len(of_kind(docs, "PodMonitor")) == 1
    assert [d for d in of_kind(docs, "ConfigMap") if "hotpipe.json" in d["data"]]
    # the names the walkthrough uses after the install
    release = {d["metadata"]["name"] for d in docs}
    assert {"hotpipe-api", "hotpipe-worker-sdxl"} <= release
    assert f"svc/hotpipe-api 8000:{fleet.get('api', {}).get('service', {}).get('port', 80)}" in readme
