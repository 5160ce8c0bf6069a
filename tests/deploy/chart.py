"""Render and lint the Helm chart with Helm's own Go SDK (helm-python-sdk), offline.

No helm binary and no cluster: ``helm_python`` binds Helm's Go library through ctypes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "hotpipe"
RELEASE = "hp"
NAMESPACE = "ml"
#: the chart's kubeVersion floor and the newest schemas kubernetes-validate ships
KUBE_VERSIONS = ("1.29.0", "1.37.0")
#: Kubernetes' grace period is the pool's gracefulShutdownSeconds plus this margin
SHUTDOWN_MARGIN_S = 30

Manifest = dict[str, Any]


def render(values: dict[str, Any] | None = None, release: str = RELEASE) -> list[Manifest]:
    """Every object the chart renders for ``values`` (NOTES.txt left out)."""
    docs: list[Manifest] = []
    for path, text in sorted(render_files(values, release).items()):
        if path.endswith(".yaml"):
            docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def render_files(values: dict[str, Any] | None = None, release: str = RELEASE) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=release, namespace=NAMESPACE, is_install=True)


def merged_values(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The values an install would use: the chart's defaults coalesced with ``values``."""
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


def enabled_pools(values: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Pool name -> the pool's own keys over workers.defaults (shallow, as the chart merges)."""
    workers = merged_values(values)["workers"]
    pools = {}
    for name, spec in (workers["pools"] or {}).items():
        pool = {**workers["defaults"], **(spec or {})}
        for key in ("autoscaling", "podDisruptionBudget"):
            pool[key] = {**workers["defaults"][key], **(spec or {}).get(key, {})}
        if spec is not None and pool["enabled"]:
            pools[name] = pool
    return pools


def lint_report(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """``helm lint --strict`` of the chart with ``values``, against the oldest Kubernetes it supports."""
    return helm.lint(CHART, values, strict=True, kube_version="v" + KUBE_VERSIONS[0])


def lint_messages(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """helm lint --strict findings that are warnings or errors (severity 2 and 3)."""
    report = lint_report(values)
    assert report["errors"] == [], report
    return [m for m in report["messages"] if m["severity"] >= 2]


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def component(docs: list[Manifest], kind: str, name: str) -> list[Manifest]:
    """Objects of ``kind`` labelled app.kubernetes.io/component=``name``."""
    return [d for d in of_kind(docs, kind) if d["metadata"]["labels"].get("app.kubernetes.io/component") == name]


def only_container(deployment: Manifest) -> Manifest:
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]


def env_values(container: Manifest) -> dict[str, Any]:
    """Env name -> its literal value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def arg_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def hotpipe_names(text: str) -> set[str]:
    """Every HOTPIPE_* name written in ``text``."""
    return set(re.findall(r"HOTPIPE_[A-Z0-9_]*[A-Z0-9]", text))
