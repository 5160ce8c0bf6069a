"""Affinity routing decisions over a real registry (records written as workers write them)."""

from __future__ import annotations

import pytest
import redis

from hotpipe.producer.routing import Router
from hotpipe.shared.messages import enqueue
from hotpipe.shared.registry import HotCheckpoint, Registry, WorkerInfo, worker_queue

FAMILY = "stable-diffusion"


@pytest.fixture
def registry(redis_client: redis.Redis) -> Registry:
    return Registry(redis_client, ttl_s=60)


@pytest.fixture
def router(registry: Registry) -> Router:
    return Router(registry, backlog_max=2, claim_s=30)


def worker(registry: Registry, name: str, *hot: tuple[str, int], ready: bool = True,
           families: tuple[str, ...] = (FAMILY,), loading: tuple[str, ...] = ()) -> str:
    registry.publish(WorkerInfo(name=name, queue=worker_queue(name), families=list(families), device="cpu",
                                ready=ready, hot=[HotCheckpoint(c, uses=u) for c, u in hot], loading=list(loading)))
    return worker_queue(name)


def fill(redis_server: str, queue: str, n: int) -> None:
    client = redis.Redis.from_url(redis_server)
    for i in range(n):
        enqueue(client, f"job{i}", FAMILY, queue=queue)


def test_no_live_worker_means_the_family_queue(router: Router, registry: Registry) -> None:
    worker(registry, "starting@h", ready=False)
    worker(registry, "other@h", families=("kandinsky22",))
    assert router.queue_for(FAMILY, "tiny-sd") is None


def test_the_worker_holding_the_checkpoint_gets_the_job(router: Router, registry: Registry) -> None:
    worker(registry, "a@h", ("other", 1))
    b = worker(registry, "b@h", ("tiny-sd", 5))
    c = worker(registry, "c@h", loading=("sdxl",))
    assert router.queue_for(FAMILY, "tiny-sd") == b
    assert router.queue_for(FAMILY, "sdxl") == c  # loading counts as holding


def test_a_holder_over_the_backlog_bound_sends_the_job_to_the_family_queue(
        router: Router, registry: Registry, redis_server: str) -> None:
    worker(registry, "a@h")
    b = worker(registry, "b@h", ("tiny-sd", 5))
    fill(redis_server, b, 2)
    assert router.queue_for(FAMILY, "tiny-sd") is None


def test_nobody_holds_it_prefers_the_worker_holding_fewest_then_the_cheapest_eviction(
        router: Router, registry: Registry) -> None:
    worker(registry, "a@h", ("x", 9), ("y", 9))
    worker(registry, "b@h", ("z", 9), ("w", 1))
    c = worker(registry, "c@h", ("v", 2))
    assert router.queue_for(FAMILY, "new-1") == c
    worker(registry, "c@h", ("v", 2), ("new-1", 3))
    # a and c hold two each now... b too; b's least used pipeline is the cheapest to evict
    assert router.queue_for(FAMILY, "new-2") == worker_queue("b@h")


def test_concurrent_first_requests_go_to_the_one_claimed_loader(router: Router, registry: Registry) -> None:
    worker(registry, "a@h", ("x", 1))
    b = worker(registry, "b@h")
    assert router.queue_for(FAMILY, "tiny-sd") == b
    # b's record has not caught up (it has not started loading), and meanwhile it looks busier
    # than a: without the claim a second request would go to a and load the checkpoint twice
    worker(registry, "b@h", ("y", 1), ("z", 1))
    assert [router.queue_for(FAMILY, "tiny-sd") for _ in range(3)] == [b, b, b]
    assert router.queue_for(FAMILY, "another") == worker_queue("a@h")


def test_an_unreadable_registry_falls_back_to_the_family_queue() -> None:
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    assert Router(Registry(dead)).queue_for(FAMILY, "tiny-sd") is None


def test_a_malformed_record_falls_back_to_the_family_queue(router: Router, registry: Registry) -> None:
    from hotpipe.shared import keys

    worker(registry, "a@h", ("tiny-sd", 1))
    registry.redis.set(keys.worker("a@h"), '{"name": "a@h"}')
    assert router.queue_for(FAMILY, "tiny-sd") is None
