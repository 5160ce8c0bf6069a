"""Affinity routing decisions over a real registry (records written as workers write them)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from hotpipe.producer.routing import Router
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.messages import run_message
from hotpipe.shared.popularity import Popularity
from hotpipe.shared.queues import worker_queue
from hotpipe.shared.registry import HotCheckpoint, Registry, WorkerInfo
from hotpipe.shared.store import JobStore
from tests.jobs import job_spec

FAMILY = "stable-diffusion"


@pytest.fixture
def registry(redis_client: redis.Redis) -> Registry:
    return Registry(redis_client, ttl_s=60)


@pytest.fixture
def router(registry: Registry) -> Router:
    return Router(registry, backlog_max=2, claim_s=30)


@pytest.fixture
def popularity(redis_client: redis.Redis) -> Popularity:
    return Popularity(redis_client, half_life_s=3600)


@pytest.fixture
def counting_router(registry: Registry, popularity: Popularity) -> Router:
    return Router(registry, backlog_max=2, claim_s=30, popularity=popularity)


def worker(registry: Registry, name: str, *hot: tuple[str, int], ready: bool = True,
           families: tuple[str, ...] = (FAMILY,), loading: tuple[str, ...] = (), **info: Any) -> str:
    registry.publish(WorkerInfo(name=name, queue=worker_queue(name), families=list(families), device="cpu",
                                ready=ready, hot=[HotCheckpoint(c, uses=u, family=FAMILY) for c, u in hot],
                                loading=list(loading), **info))
    return worker_queue(name)


def requested(popularity: Popularity, **times: int) -> None:
    """Count requests fleet-wide, as submits through other producers would have."""
    for checkpoint, n in times.items():
        for _ in range(n):
            popularity.bump(FAMILY, checkpoint)


def fill(redis_server: str, queue: str, n: int) -> None:
    """``n`` jobs queued there, created as a routed submit creates them."""
    store = JobStore(redis.Redis.from_url(redis_server), record_ttl_s=600)
    for _ in range(n):
        job_id = new_job_id()
        store.create(job_id, family=FAMILY, pipeline="StableDiffusionPipeline", checkpoint="tiny-sd", revision=None,
                     task=Task.TEXT2IMAGE, spec=job_spec(), message=run_message(job_id, FAMILY, queue=queue))


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


def test_among_holders_the_one_with_the_jobs_adapters_resident_gets_it(router: Router, registry: Registry,
                                                                        redis_server: str) -> None:
    def holder(name: str, *adapters: str) -> str:
        registry.publish(WorkerInfo(name=name, queue=worker_queue(name), families=[FAMILY], device="cpu", ready=True,
                                    hot=[HotCheckpoint("tiny-sd", uses=1, family=FAMILY, adapters=list(adapters))]))
        return worker_queue(name)

    plain, styled, both = holder("a@h"), holder("b@h", "style-b"), holder("c@h", "style-b", "style-c")
    assert router.queue_for(FAMILY, "tiny-sd", ("style-b",)) == styled  # b and c tie on adapters; b by name
    assert router.queue_for(FAMILY, "tiny-sd", ("style-b", "style-c")) == both
    assert router.queue_for(FAMILY, "tiny-sd") == plain  # no LoRAs: the least busy, then by name
    fill(redis_server, both, 1)  # one job waiting there: a holder missing an adapter is still worse
    assert router.queue_for(FAMILY, "tiny-sd", ("style-b", "style-c")) == both
    fill(redis_server, both, 1)  # at the backlog bound (2): the next best holder takes it
    assert router.queue_for(FAMILY, "tiny-sd", ("style-b", "style-c")) == styled


def test_when_every_holder_would_evict_an_adapter_a_worker_with_room_takes_the_checkpoint_too(
        router: Router, registry: Registry) -> None:
    def publish(name: str, *adapters: str, hot: bool = True, full: bool = False) -> str:
        held = [HotCheckpoint("tiny-sd", uses=1, family=FAMILY, adapters=list(adapters))] if hot else []
        registry.publish(WorkerInfo(name=name, queue=worker_queue(name), families=[FAMILY], device="cpu", ready=True,
                                    hot=held, max_adapters=2, full=full))
        return worker_queue(name)

    holder = publish("a@h", "s1", "s2")
    spare = publish("b@h", hot=False)
    assert router.queue_for(FAMILY, "tiny-sd", ("s1",)) == holder  # resident there: no eviction
    assert router.queue_for(FAMILY, "tiny-sd") == holder  # no LoRA: no adapter to evict
    assert router.queue_for(FAMILY, "tiny-sd", ("s3",)) == spare  # s3 would evict s1 or s2 on a@h
    publish("b@h", hot=False, full=True)  # no room there either: the holder evicts an adapter
    assert router.queue_for(FAMILY, "tiny-sd", ("s3",)) == holder
    publish("a@h", "s1")  # room for one more adapter on the holder
    publish("b@h", hot=False)
    assert router.queue_for(FAMILY, "tiny-sd", ("s3",)) == holder


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


def test_the_claimed_loader_takes_first_requests_over_the_backlog_bound(
        router: Router, registry: Registry, redis_server: str) -> None:
    worker(registry, "a@h", ("x", 1))
    b = worker(registry, "b@h")
    assert router.queue_for(FAMILY, "tiny-sd") == b
    fill(redis_server, b, router.backlog_max)  # jobs it has not started yet: spilling them would load it twice
    assert router.queue_for(FAMILY, "tiny-sd") == b


def test_an_unreadable_registry_falls_back_to_the_family_queue() -> None:
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    assert Router(Registry(dead)).queue_for(FAMILY, "tiny-sd") is None


def test_a_malformed_record_falls_back_to_the_family_queue(router: Router, registry: Registry) -> None:
    from hotpipe.shared import keys

    worker(registry, "a@h", ("tiny-sd", 1))
    registry.redis.set(keys.worker("a@h"), '{"name": "a@h"}')
    assert router.queue_for(FAMILY, "tiny-sd") is None


def test_every_routed_job_counts_one_request_of_its_checkpoint(
        counting_router: Router, registry: Registry, popularity: Popularity) -> None:
    assert counting_router.queue_for(FAMILY, "tiny-sd") is None  # no worker yet: counted all the same
    a = worker(registry, "a@h", ("tiny-sd", 1))
    assert counting_router.queue_for(FAMILY, "tiny-sd") == a  # a holder
    assert counting_router.queue_for(FAMILY, "other") == a  # nobody holds it
    assert popularity.counts([(FAMILY, "tiny-sd"), (FAMILY, "other")]) == pytest.approx([2, 1], abs=0.01)


def test_a_full_fleet_loads_where_the_victim_is_least_popular_fleet_wide(
        router: Router, counting_router: Router, registry: Registry, popularity: Popularity) -> None:
    # a ran x only once itself, but x is the fleet's favourite; b ran z often, but nobody asks for z lately
    worker(registry, "a@h", ("x", 1), ("y", 5), capacity=2, evicts_next="x")
    b = worker(registry, "b@h", ("z", 50), ("w", 50), capacity=2, evicts_next="z")
    requested(popularity, x=10, y=5, z=1, w=6)
    assert router.queue_for(FAMILY, "new-1") == worker_queue("a@h")  # by local uses alone: evict x
    assert counting_router.queue_for(FAMILY, "new-2") == b


def test_a_popular_policy_worker_is_judged_by_the_counts_not_its_published_victim(
        counting_router: Router, registry: Registry, popularity: Popularity) -> None:
    # b published "w" as its next victim a while ago; by the counts now it would evict z, the rarest
    worker(registry, "a@h", ("x", 1), ("y", 1), capacity=2, evicts_next="x", policy="popular")
    b = worker(registry, "b@h", ("z", 1), ("w", 1), capacity=2, evicts_next="w", policy="popular")
    requested(popularity, x=3, y=3, z=1, w=9)
    assert counting_router.queue_for(FAMILY, "new") == b


def test_with_room_everywhere_the_checkpoint_goes_where_less_popularity_is_served(
        counting_router: Router, registry: Registry, popularity: Popularity) -> None:
    worker(registry, "a@h", ("hot", 1), capacity=4)
    b = worker(registry, "b@h", ("y", 1), ("z", 1), capacity=4)
    requested(popularity, hot=10, y=1, z=1)
    assert counting_router.queue_for(FAMILY, "new") == b  # b holds more pipelines, but a serves the traffic


def test_room_to_spare_beats_evicting_even_the_rarest(
        counting_router: Router, registry: Registry, popularity: Popularity) -> None:
    worker(registry, "a@h", ("rare", 1), capacity=1)
    b = worker(registry, "b@h", ("hot", 1), full=False)  # memory-bound, with room
    requested(popularity, rare=1, hot=20)
    assert counting_router.queue_for(FAMILY, "new") == b
    worker(registry, "b@h", ("hot", 1), full=True)  # its memory budget is used up now
    assert counting_router.queue_for(FAMILY, "newer") == worker_queue("a@h")


def test_a_loader_claim_ends_once_the_checkpoint_is_hot_there(
        counting_router: Router, registry: Registry, popularity: Popularity) -> None:
    a = worker(registry, "a@h", ("x", 1), capacity=2)
    b = worker(registry, "b@h", capacity=2)
    assert counting_router.queue_for(FAMILY, "new") == b
    worker(registry, "b@h", loading=("new",), capacity=2)
    assert registry.loader(FAMILY, "new") == "b@h"  # still loading: the claim stands
    worker(registry, "c@h", ("new", 1), capacity=2)  # another worker's record does not end b's claim
    assert registry.loader(FAMILY, "new") == "b@h"
    registry.retire("c@h")
    worker(registry, "b@h", ("new", 1), capacity=2)
    assert registry.loader(FAMILY, "new") is None  # hot there: its record says so from now on
    # b evicts it for two popular ones; the next request for it goes where loading costs least (a has
    # room), not back to b by a claim from before
    worker(registry, "b@h", ("hot", 1), ("hot2", 1), capacity=2)
    requested(popularity, hot=5, hot2=5)
    assert counting_router.queue_for(FAMILY, "new") == a
