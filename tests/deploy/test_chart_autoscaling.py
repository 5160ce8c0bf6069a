"""The chart's autoscaling counts what the code counts: each ScaledObject's triggers, read from a
real API over a real redis-server holding a fleet's queues, give the values and the replicas
that ``shared/hotpipe/shared/queues.py`` counts for the pool's family."""

from __future__ import annotations

import math
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
from fastapi.testclient import TestClient
from kombu.transport.redis import PRIORITY_STEPS, Channel

from hotpipe.producer.api import create_app
from hotpipe.shared.celery_app import make_celery
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.messages import enqueue
from hotpipe.shared.queues import backlog, worker_queue
from hotpipe.shared.registry import Registry, WorkerInfo
from hotpipe.shared.settings import Settings
from hotpipe.shared.store import JobStore
from tests.deploy.chart import Manifest, enabled_pools, of_kind, render
from tests.deploy.scenarios import SCENARIOS
from tests.deploy.test_chart import evaluate
from tests.jobs import claim, job_spec

#: two autoscaled pools (stable-diffusion: 2 queued jobs per replica, sdxl: 1), one fixed (if)
VALUES = SCENARIOS["keda"]
SD, SDXL = "stable-diffusion", "stable-diffusion-xl"
#: live workers' own queues: (worker, families served, messages in its queue)
OWN_QUEUES = (("a@h", [SD], 2), ("b@h", [SD, SDXL], 1), ("c@h", ["if"], 4))
#: jobs waiting for each family: a message in every priority list of its queue, plus its workers' own
EXPECTED_QUEUED = {SD: 10 + 2 + 1, SDXL: 10 + 1}
RUNNING = {SD: 3, SDXL: 1}


def kombu_lists(queue: str) -> list[str]:
    """The Redis lists Kombu keeps for ``queue`` under hotpipe's Celery configuration."""
    options = make_celery(Settings()).conf.broker_transport_options
    return [f"{queue}{Channel.sep}{step}" if step else queue for step in options.get("priority_steps", PRIORITY_STEPS)]


def fill(client: redis.Redis) -> None:
    """Queued jobs in every list Kombu reads, in live and dead workers' own queues; running jobs."""
    for family in (SD, SDXL, "if"):
        for name in kombu_lists(family):
            client.rpush(name, "message")
    registry = Registry(client, ttl_s=60)
    for name, families, messages in OWN_QUEUES:
        registry.publish(WorkerInfo(name=name, queue=worker_queue(name), families=families, device="cpu", ready=True))
        for priority in range(messages):
            enqueue(client, new_job_id(), families[0], priority, queue=worker_queue(name))
    enqueue(client, new_job_id(), SD, queue=worker_queue("dead@h"))  # no record: a reaper drains it
    store = JobStore(client, record_ttl_s=60)
    for family, jobs in RUNNING.items():
        for _ in range(jobs):
            job_id = new_job_id()
            store.create(job_id, family=family, pipeline="P", checkpoint="c", revision=None, task=Task.TEXT2IMAGE,
                         spec=job_spec())
            assert claim(store, job_id) == 1


@pytest.fixture
def api(redis_server: str) -> Iterator[TestClient]:
    """The API over the session's redis-server, as KEDA's metrics-api scaler reaches it (no credentials)."""
    with TestClient(create_app(Settings.from_env({}, redis_url=redis_server))) as client:
        yield client


def trigger_value(api: TestClient, trigger: Manifest) -> int:
    """What KEDA's metrics-api scaler reads for ``trigger``: ``valueLocation`` in the JSON at ``url``."""
    assert trigger["type"] == "metrics-api"
    response = api.get(urlsplit(trigger["metadata"]["url"]).path)
    assert response.status_code == 200, response.text
    return int(response.json()[trigger["metadata"]["valueLocation"]])


def test_keda_scales_each_pool_on_the_backlog_the_queue_module_counts(redis_client: redis.Redis,
                                                                      api: TestClient) -> None:
    fill(redis_client)
    pools = enabled_pools(VALUES)
    scaled = of_kind(render(VALUES), "ScaledObject")
    assert sorted(pools[s["metadata"]["labels"]["hotpipe.io/pool"]]["family"] for s in scaled) == [SD, SDXL]
    for obj in scaled:
        pool = pools[obj["metadata"]["labels"]["hotpipe.io/pool"]]
        family = pool["family"]
        counted = backlog(redis_client, [family])
        assert (counted.queued[family], counted.running[family]) == (EXPECTED_QUEUED[family], RUNNING[family])
        seen = {t["name"]: trigger_value(api, t) for t in obj["spec"]["triggers"]}
        assert seen == {"queued": counted.queued[family], "running": counted.running[family]}
        modifiers = obj["spec"]["advanced"]["scalingModifiers"]
        per_replica = pool["autoscaling"]["queuedJobsPerReplica"]
        replicas = math.ceil(evaluate(modifiers["formula"], seen) / int(modifiers["target"]))
        assert replicas == RUNNING[family] + math.ceil(EXPECTED_QUEUED[family] / per_replica)


@pytest.mark.parametrize("keda_keys", [{"addressKey": ""}, {"addressKey": "address", "passwordKey": "password",
                                                           "databaseIndex": 2, "enableTLS": True}])
def test_the_redis_keys_earlier_charts_gave_keda_install_and_are_not_needed(keda_keys: dict[str, object]) -> None:
    docs = render({"redis": keda_keys, "workers": {"defaults": {"autoscaling": {"enabled": True}}}})
    assert of_kind(docs, "ScaledObject") and of_kind(docs, "TriggerAuthentication") == []
