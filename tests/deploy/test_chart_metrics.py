"""The chart's monitoring: the dashboard asks only for metrics the code exports, and Prometheus
scrapes the ports and paths the code serves them on."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hotpipe.producer.api import create_app
from hotpipe.producer.metrics import ApiMetrics, QueueCollector
from hotpipe.shared.settings import Settings
from hotpipe.workers.exporter import InfoCollector
from hotpipe.workers.metrics import ReaperMetrics, WorkerMetrics
from tests.deploy.chart import CHART, ROOT, Manifest, component, env_values, of_kind, only_container, render
from tests.deploy.scenarios import SCENARIOS

DASHBOARD = CHART / "dashboards" / "hotpipe.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
MONITORED = {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                         "dashboard": {"enabled": True}},
             "workers": {"pools": {"sdxl": {"family": "stable-diffusion-xl"}}}}


def series_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry's metrics can expose (a counter ``x`` as ``x_total``, ...)."""
    names = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def exported() -> dict[str, set[str]]:
    """Series names by where they are served: the API's /metrics and a worker's."""
    api, worker = CollectorRegistry(), CollectorRegistry()
    ApiMetrics(api)
    api.register(_QueueFigures())
    WorkerMetrics(worker)
    ReaperMetrics(worker)
    worker.register(InfoCollector(["stable-diffusion"], "cpu"))
    return {"api": series_names(api), "worker": series_names(worker)}


class _QueueFigures:
    """The queue collector's metric families, without reading Redis."""

    def collect(self) -> Any:
        return QueueCollector.empty_families()


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    exprs += [var["definition"] for var in board["templating"]["list"] if "definition" in var]
    return exprs


def test_the_dashboard_queries_only_metrics_the_code_exports() -> None:
    names = exported()
    everything = names["api"] | names["worker"]
    used = {name for expr in dashboard_queries() for name in re.findall(r"\bhotpipe_[a-z0-9_]+", expr)}
    assert used - everything == set(), "dashboards/hotpipe.json asks for metrics no code exports"
    # what the issue asks to see: submitted/finished, queue depth, stage latency, cache, GPU memory
    wanted = {"hotpipe_jobs_submitted_total", "hotpipe_worker_jobs_finished_total", "hotpipe_queue_depth",
              "hotpipe_jobs_running", "hotpipe_job_stage_seconds_bucket", "hotpipe_cache_hits_total",
              "hotpipe_cache_misses_total", "hotpipe_cache_evictions_total", "hotpipe_cache_resident_pipelines",
              "hotpipe_gpu_memory_bytes", "hotpipe_http_requests_total"}
    assert wanted <= used


def test_the_check_catches_a_misspelt_metric() -> None:
    everything = exported()["api"] | exported()["worker"]
    assert "hotpipe_queue_depth" in everything and "hotpipe_queue_depth_total" not in everything
    assert "hotpipe_jobs_submitted_total" in everything and "hotpipe_jobs_submitted" not in everything


def test_the_dashboard_ships_in_a_configmap_grafana_finds() -> None:
    docs = render(MONITORED)
    maps = [d for d in of_kind(docs, "ConfigMap") if "hotpipe.json" in d.get("data", {})]
    assert len(maps) == 1
    assert maps[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(maps[0]["data"]["hotpipe.json"]) == json.loads(DASHBOARD.read_text())
    assert not [d for d in of_kind(render(), "ConfigMap") if "hotpipe.json" in d.get("data", {})], "off by default"


def metrics_port(container: Manifest) -> int:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    return int(ports["metrics"])


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_workers_serve_metrics_on_the_port_their_pods_declare(scenario: str) -> None:
    for deployment in component(render(SCENARIOS[scenario]), "Deployment", "worker"):
        container = only_container(deployment)
        env = {k: v for k, v in env_values(container).items() if isinstance(v, str)}
        port = metrics_port(container)
        assert Settings.from_env(env).worker_metrics_port == port
        assert port == Settings().worker_metrics_port, "the chart's port should be the setting's default"


def test_the_pod_monitor_scrapes_every_worker_pool_and_nothing_else() -> None:
    docs = render(MONITORED)
    (monitor,) = of_kind(docs, "PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in of_kind(docs, "Deployment")}
    selected = {name for name, labels in pods.items() if selector.items() <= labels.items()}
    workers = component(docs, "Deployment", "worker")
    assert selected == {d["metadata"]["name"] for d in workers} and len(selected) == 2
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    for deployment in workers:
        assert endpoint["port"] in [p["name"] for p in only_container(deployment)["ports"]]


def test_the_service_monitor_scrapes_the_api_where_it_serves_metrics() -> None:
    docs = render(MONITORED)
    (monitor,) = of_kind(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    (service,) = component(docs, "Service", "api")
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    api = only_container(component(docs, "Deployment", "api")[0])
    assert port["targetPort"] in [p["name"] for p in api["ports"]]
    app = create_app(Settings())  # builds clients without connecting
    assert endpoint["path"] in [getattr(route, "path", None) for route in app.routes]


def documented_metrics() -> set[str]:
    table = (ROOT / "docs" / "metrics.md").read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(hotpipe_[a-z_]+)` \|", table, flags=re.MULTILINE))


def test_the_metrics_reference_lists_exactly_the_metrics_the_code_exports() -> None:
    registries = CollectorRegistry(), CollectorRegistry()
    ApiMetrics(registries[0])
    registries[0].register(_QueueFigures())
    WorkerMetrics(registries[1])
    ReaperMetrics(registries[1])
    registries[1].register(InfoCollector(["stable-diffusion"], "cpu"))
    families = set()
    for registry in registries:
        for family in registry.collect():
            families.add(family.name + ("_total" if family.type == "counter" else ""))
    assert families == documented_metrics(), "docs/metrics.md and the code disagree"
