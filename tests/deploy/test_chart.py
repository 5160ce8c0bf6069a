"""The chart, rendered by Helm's Go SDK for the defaults and several overrides: valid Kubernetes,
lint-clean, one Deployment per pool, queues and settings that match the code, selectors, probes."""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest

from hotpipe.cli import build_parser
from hotpipe.producer.api import create_app
from hotpipe.shared.families import LOOKUP_ORDER
from hotpipe.shared.queues import family_queue
from hotpipe.shared.settings import ENV_PREFIX, Settings
from tests.deploy.chart import (
    KUBE_VERSIONS,
    NAMESPACE,
    SHUTDOWN_MARGIN_S,
    Manifest,
    arg_after,
    component,
    enabled_pools,
    env_values,
    lint_messages,
    of_kind,
    only_container,
    render,
)
from tests.deploy.crds import SCHEMAS
from tests.deploy.scenarios import SCENARIOS

SETTING_NAMES = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
FAMILIES = {family for table in LOOKUP_ORDER for family in table}


@pytest.fixture(scope="module", params=list(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> tuple[dict[str, Any] | None, list[Manifest]]:
    values = SCENARIOS[request.param]
    return values, render(values)


def evaluate(formula: str, values: dict[str, int]) -> int:
    """A KEDA formula made of ``+`` and ``N * name`` terms, over trigger values."""
    total = 0
    for term in formula.split(" + "):
        factor, _, name = term.rpartition(" * ")
        total += int(factor or 1) * values[name]
    return total


def queues_url_is_the_apis(url: str, docs: list[Manifest], queue: str) -> bool:
    """``url`` is the API Service's, on the route that counts ``queue``'s queued and running jobs."""
    (service,) = component(docs, "Service", "api")
    parts = urlsplit(url)
    host = f"{service['metadata']['name']}.{NAMESPACE}.svc"
    routes = [getattr(r, "path", None) for r in create_app(Settings()).routes]
    return (parts.hostname, parts.port, parts.path) == (host, service["spec"]["ports"][0]["port"],
                                                        f"/v1/queues/{queue}") and "/v1/queues/{family}" in routes


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_rendered_objects_are_valid_kubernetes(scenario: tuple[Any, list[Manifest]]) -> None:
    _, docs = scenario
    assert docs
    for doc in docs:
        if doc["kind"] in SCHEMAS:
            jsonschema.validate(doc, SCHEMAS[doc["kind"]])
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_lint_finds_no_warning_or_error(scenario: tuple[Any, list[Manifest]]) -> None:
    values, _ = scenario
    assert lint_messages(values) == []


def test_one_worker_deployment_per_enabled_pool(scenario: tuple[Any, list[Manifest]]) -> None:
    values, docs = scenario
    pools = enabled_pools(values)
    assert pools, "every scenario has at least one pool"
    deployed = {d["metadata"]["labels"]["hotpipe.io/pool"] for d in component(docs, "Deployment", "worker")}
    assert deployed == set(pools)
    assert len(component(docs, "Deployment", "worker")) == len(pools)
    assert len(component(docs, "Deployment", "api")) == 1


def test_workers_consume_the_queue_the_code_routes_their_family_to(scenario: tuple[Any, list[Manifest]]) -> None:
    values, docs = scenario
    pools = enabled_pools(values)
    for deployment in component(docs, "Deployment", "worker"):
        pool = pools[deployment["metadata"]["labels"]["hotpipe.io/pool"]]
        args = only_container(deployment)["args"]
        family = arg_after(args, "--family")
        assert family == pool["family"] and family in FAMILIES
        assert deployment["metadata"]["labels"]["hotpipe.io/queue"] == family_queue(family)
        assert args[0] == "worker" and args.count("--family") == 1
        assert build_parser().parse_args(args).family == [family]


def test_api_args_are_a_valid_command(scenario: tuple[Any, list[Manifest]]) -> None:
    _, docs = scenario
    api = only_container(component(docs, "Deployment", "api")[0])
    parsed = build_parser().parse_args(api["args"])
    assert (parsed.command, parsed.host) == ("api", "0.0.0.0")
    assert parsed.port == api["ports"][0]["containerPort"]


def test_keda_scales_on_the_queued_and_running_jobs_the_api_counts(scenario: tuple[Any, list[Manifest]]) -> None:
    values, docs = scenario
    pools = enabled_pools(values)
    autoscaled = {name for name, pool in pools.items() if pool["autoscaling"]["enabled"]}
    scaled = of_kind(docs, "ScaledObject")
    assert {s["metadata"]["labels"]["hotpipe.io/pool"] for s in scaled} == autoscaled
    deployments = {d["metadata"]["name"]: d for d in component(docs, "Deployment", "worker")}
    for obj in scaled:
        pool = pools[obj["metadata"]["labels"]["hotpipe.io/pool"]]
        target = deployments[obj["spec"]["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"], "KEDA owns the replica count"
        triggers = obj["spec"]["triggers"]
        # one count of the queue, the API's (tests/deploy/test_chart_autoscaling.py): no trigger counts on its own
        assert [t["type"] for t in triggers] == ["metrics-api"] * 2
        assert {t["metadata"]["valueLocation"] for t in triggers} == {"queued", "running"}
        for trigger in triggers:
            assert trigger["name"] == trigger["metadata"]["valueLocation"]
            assert queues_url_is_the_apis(trigger["metadata"]["url"], docs, family_queue(pool["family"]))
        modifiers = obj["spec"]["advanced"]["scalingModifiers"]
        per_replica = pool["autoscaling"]["queuedJobsPerReplica"]
        assert modifiers["target"] == str(per_replica)
        # replicas = ceil(formula / target) = one per running job + ceil(queued / per_replica)
        for queued, busy in ((0, 3), (8, 0), (10, 2), (1, 1)):
            replicas = math.ceil(evaluate(modifiers["formula"], {"queued": queued, "running": busy}) / per_replica)
            assert replicas == busy + math.ceil(queued / per_replica)
        assert (obj["spec"]["minReplicaCount"], obj["spec"]["maxReplicaCount"]) == (
            pool["autoscaling"]["minReplicas"], pool["autoscaling"]["maxReplicas"])
    assert of_kind(docs, "TriggerAuthentication") == [], "KEDA reads nothing from Redis itself"


def test_gpu_pools_request_one_gpu_and_run_on_it(scenario: tuple[Any, list[Manifest]]) -> None:
    values, docs = scenario
    pools = enabled_pools(values)
    for deployment in component(docs, "Deployment", "worker"):
        pool = pools[deployment["metadata"]["labels"]["hotpipe.io/pool"]]
        container = only_container(deployment)
        wanted = pool["resources"].get("limits", {}).get("nvidia.com/gpu", 0)
        limits = container["resources"].get("limits", {})
        env = env_values(container)
        if wanted:
            assert str(limits["nvidia.com/gpu"]) == "1"
            assert env["HOTPIPE_DEVICE"] == "cuda:0"
        else:
            assert "nvidia.com/gpu" not in limits and "nvidia.com/gpu" not in container["resources"].get("requests", {})
            assert env["HOTPIPE_DEVICE"] == "cpu"
        assert env["HOTPIPE_DTYPE"] == pool["dtype"]


def test_selectors_pick_exactly_their_own_pods(scenario: tuple[Any, list[Manifest]]) -> None:
    _, docs = scenario
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in of_kind(docs, "Deployment")}
    for deployment in of_kind(docs, "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert [name for name, labels in pods.items() if labels_match(selector, labels)] == [
            deployment["metadata"]["name"]]
    selecting = of_kind(docs, "Service") + of_kind(docs, "PodDisruptionBudget") + of_kind(docs, "ServiceMonitor")
    for obj in selecting:
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        matched = [name for name, labels in pods.items() if labels_match(selector, labels)]
        assert len(matched) == 1, (obj["kind"], obj["metadata"]["name"], matched)


def test_scale_targets_and_backends_exist(scenario: tuple[Any, list[Manifest]]) -> None:
    _, docs = scenario
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    for ingress in of_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                ports = [p["name"] for p in services[backend["name"]]["spec"]["ports"]]
                assert backend["port"]["name"] in ports


def test_probes_are_present(scenario: tuple[Any, list[Manifest]]) -> None:
    _, docs = scenario
    api = only_container(component(docs, "Deployment", "api")[0])
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for deployment in component(docs, "Deployment", "worker"):
        container = only_container(deployment)
        ready_file = env_values(container)["HOTPIPE_WORKER_READY_FILE"]
        assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", ready_file]
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        assert not any(ready_file.startswith(m + "/") for m in mounts), "a volume would outlive a restart"


def test_grace_period_covers_the_workers_graceful_shutdown(scenario: tuple[Any, list[Manifest]]) -> None:
    values, docs = scenario
    pools = enabled_pools(values)
    for deployment in component(docs, "Deployment", "worker"):
        pool = pools[deployment["metadata"]["labels"]["hotpipe.io/pool"]]
        env = {k: v for k, v in env_values(only_container(deployment)).items() if isinstance(v, str)}
        worker_bound = Settings.from_env(env).shutdown_grace_s
        assert worker_bound == pool["gracefulShutdownSeconds"]
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace == worker_bound + SHUTDOWN_MARGIN_S


def test_every_hotpipe_variable_is_a_setting(scenario: tuple[Any, list[Manifest]]) -> None:
    _, docs = scenario
    names = {name for cm in of_kind(docs, "ConfigMap") for name in cm.get("data", {})}
    for deployment in of_kind(docs, "Deployment"):
        names |= set(env_values(only_container(deployment)))
    hotpipe = {n for n in names if n.startswith(ENV_PREFIX)}
    assert hotpipe >= {"HOTPIPE_REDIS_URL", "HOTPIPE_S3_BUCKET"}
    assert hotpipe <= SETTING_NAMES, hotpipe - SETTING_NAMES


def test_credentials_come_from_secrets(scenario: tuple[Any, list[Manifest]]) -> None:
    values, docs = scenario
    redis_secret = ((values or {}).get("redis") or {}).get("existingSecret", "hotpipe-redis")
    secret_vars = {"HOTPIPE_REDIS_URL", "HOTPIPE_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                   "HF_TOKEN", "HOTPIPE_WEBHOOK_SECRET"}
    for deployment in of_kind(docs, "Deployment"):
        env = env_values(only_container(deployment))
        assert env["HOTPIPE_REDIS_URL"]["secretKeyRef"]["name"] == redis_secret
        for name in secret_vars & set(env):
            assert isinstance(env[name], dict) and "secretKeyRef" in env[name], name
    for cm in of_kind(docs, "ConfigMap"):
        assert not secret_vars & set(cm.get("data", {}))


def test_the_webhook_key_reaches_the_api_only() -> None:
    docs = render({"webhooks": {"existingSecret": "hooks", "secretKey": "signing-key"}})
    by_role = {d["metadata"]["name"].rsplit("-", 1)[-1]: env_values(only_container(d))
               for d in of_kind(docs, "Deployment")}
    api = next(env for name, env in by_role.items() if name == "api")
    assert api["HOTPIPE_WEBHOOK_SECRET"]["secretKeyRef"] == {"name": "hooks", "key": "signing-key"}
    assert sum("HOTPIPE_WEBHOOK_SECRET" in env for env in by_role.values()) == 1
    assert "HOTPIPE_WEBHOOK_SECRET" not in env_values(only_container(
        next(d for d in of_kind(render(), "Deployment") if d["metadata"]["name"].endswith("-api"))))


def test_preload_and_cache_budget_reach_the_worker() -> None:
    values = {"workers": {"pools": {"stable-diffusion": {"preload": ["sd-1-5", "sd-turbo"], "cacheBudget": 20000}}}}
    deployment = next(d for d in render(values) if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"])
    container = only_container(deployment)
    assert build_parser().parse_args(container["args"]).preload == ["sd-1-5,sd-turbo"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HOTPIPE_CACHE_BUDGET_MB"] == "20000"


def test_batching_reaches_the_worker_per_pool() -> None:
    values = {"workers": {"pools": {"stable-diffusion": {"maxBatch": 4, "batchWaitMs": 20},
                                    "flux": {"family": "flux"}}}}
    workers = {d["metadata"]["name"]: {e["name"]: e.get("value") for e in only_container(d)["env"]}
               for d in render(values) if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"]}
    by_pool = {name.rsplit("-worker-", 1)[-1]: env for name, env in workers.items()}
    assert (by_pool["stable-diffusion"]["HOTPIPE_MAX_BATCH"], by_pool["stable-diffusion"]["HOTPIPE_BATCH_WAIT_MS"]) \
        == ("4", "20")
    assert (by_pool["flux"]["HOTPIPE_MAX_BATCH"], by_pool["flux"]["HOTPIPE_BATCH_WAIT_MS"]) == ("auto", "0")
    for env in by_pool.values():  # and the worker accepts what the chart writes
        assert Settings.from_env({k: v for k, v in env.items() if k.startswith("HOTPIPE_") and v}).batch_limit()
