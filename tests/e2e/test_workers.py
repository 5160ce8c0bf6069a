"""Hot workers through real processes: preload and readiness, warm routing, one loader per
checkpoint, multi-family workers, a dead worker's queue drained, ``GET /v1/workers`` and
``hotpipe workers``.

The module runs its own stack (redis, S3, API) with workers on two families and a short
registry TTL; waits are bounded, nothing asserts a duration.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.producer.client import Client
from hotpipe.shared.popularity import Popularity
from hotpipe.shared.queues import priority_lists, worker_queue
from hotpipe.shared.status import Status
from tests.e2e.polling import wait_for

pytestmark = pytest.mark.e2e

TTL_S = 3
ENV = {"HOTPIPE_WORKER_TTL_S": str(TTL_S), "HOTPIPE_REAPER_INTERVAL_S": "0.5", "HOTPIPE_TORCH_THREADS": "1"}
#: ``warm`` preloads tiny-sd; ``cold`` starts empty
WORKERS = {"warm": {"HOTPIPE_PRELOAD": "tiny-sd"}, "cold": {}}
FAMILIES = ["stable-diffusion", "chroma"]
COPIES = ("copy-a", "copy-b")
WAIT_S = 180.0


@pytest.fixture(scope="module")
def models(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoints plus copies of tiny-sd under other names (other cache keys)."""
    root = tmp_path_factory.mktemp("hot-models")
    for name in ("tiny-sd", "tiny-chroma"):
        shutil.copytree(model_root / name, root / name)
    for name in COPIES:
        shutil.copytree(model_root / "tiny-sd", root / name)
    return root


@pytest.fixture(scope="module")
def hot_stack(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("hot"), models, redis_binary=find_redis_server("system"), workers=0,
                    families=FAMILIES, extra_env=ENV) as stack:
        stack.start_workers(WORKERS)
        yield stack


@pytest.fixture(scope="module")
def client(hot_stack: LocalStack) -> Iterator[Client]:
    with Client(hot_stack.api_url) as c:
        yield c


def by_name(client: Client) -> dict[str, dict[str, Any]]:
    return {w["name"].partition("@")[0]: w for w in client.workers()}


def run(client: Client, checkpoint: str = "tiny-sd", seed: int = 1) -> str:
    record = client.submit({"checkpoint": checkpoint, "task": "text2image",
                            "params": {"prompt": "a cube", "num_inference_steps": 2, "height": 32, "width": 32,
                                       "seed": seed}})
    done = client.wait(record.id, timeout_s=WAIT_S)
    assert done.status is Status.SUCCEEDED, done.error
    return done.id


def test_preloaded_worker_is_ready_with_its_checkpoint_hot(client: Client, hot_stack: LocalStack) -> None:
    workers = by_name(client)
    warm, cold = workers["warm"], workers["cold"]
    assert warm["ready"] and [h["checkpoint"] for h in warm["hot"]] == ["tiny-sd"]
    assert warm["hot"][0]["family"] == "stable-diffusion"  # the family whose popularity counts it
    assert warm["policy"] == "popular" and not warm["full"]  # the default policy; no count bound
    assert warm["stats"]["resident_pipelines"] == 1 and warm["stats"]["resident_bytes"] > 0
    assert warm["stats"]["misses"] == 0  # hot without a miss: loaded by the preload, not by a job
    assert cold["ready"] and cold["hot"] == []
    for w in (warm, cold):
        assert w["families"] == FAMILIES and w["device"] == "cpu" and w["queue"] == worker_queue(w["name"])
    log = (hot_stack.workdir / "warm.log").read_text()
    # the family queues are consumed only after the preload
    assert log.index("preloaded tiny-sd") < log.index("Started consuming from stable-diffusion")


def test_a_failed_preload_never_turns_ready(hot_stack: LocalStack, client: Client) -> None:
    proc = hot_stack.start_worker("broken", {"HOTPIPE_PRELOAD": "no-such-checkpoint"}, wait_ready=False)
    try:
        wait_for(lambda: "preload failed" in proc.log_path.read_text(), "the preload fails", WAIT_S)
        assert not (hot_stack.workdir / "broken.ready").exists()
        broken = by_name(client).get("broken")
        assert broken is not None and not broken["ready"]
        assert "Started consuming from stable-diffusion" not in proc.log_path.read_text()
    finally:
        proc.stop()


def test_jobs_go_to_the_worker_holding_their_checkpoint(client: Client, hot_stack: LocalStack) -> None:
    before = by_name(client)
    for seed in range(6):
        run(client, seed=seed)
    # a worker publishes its counters just after the job's terminal write: wait for the last one
    after = wait_for(lambda: (w := by_name(client))["warm"]["stats"]["hits"] - before["warm"]["stats"]["hits"] >= 6
                     and w, "warm's counters cover the six jobs", WAIT_S)
    assert after["warm"]["stats"]["hits"] - before["warm"]["stats"]["hits"] == 6
    assert "tiny-sd" not in after["cold"]["stats"]["checkpoints"]
    assert after["cold"]["stats"]["misses"] == before["cold"]["stats"]["misses"]
    # the API's router counted each job in the fleet-wide popularity the workers evict by: six
    # requests, none a half-life old (the waits are bounded well below it), so each counts over half
    popularity = Popularity(redis.Redis.from_url(hot_stack.settings.redis_url, decode_responses=True),
                            hot_stack.settings.popularity_half_life_s)
    assert popularity.counts([("stable-diffusion", "tiny-sd")])[0] >= 3


def test_concurrent_first_requests_load_the_checkpoint_once(client: Client) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda seed: run(client, COPIES[0], seed), range(4)))
    holders = [name for name, w in by_name(client).items() if COPIES[0] in w["stats"]["checkpoints"]]
    assert len(holders) == 1


def test_a_worker_serves_several_families(client: Client) -> None:
    run(client, "tiny-chroma")
    assert any("tiny-chroma" in w["stats"]["checkpoints"] for w in by_name(client).values())


def test_a_dead_workers_queue_is_drained_to_the_family_queue(client: Client, hot_stack: LocalStack) -> None:
    doomed = hot_stack.start_worker("doomed", {"HOTPIPE_PRELOAD": COPIES[1]})
    wait_for(lambda: COPIES[1] in (by_name(client).get("doomed") or {}).get("stats", {}).get("checkpoints", []),
             "doomed holds its checkpoint", WAIT_S)
    r = redis.Redis.from_url(hot_stack.settings.redis_url, decode_responses=True)
    name = by_name(client)["doomed"]["name"]
    # Killed: its record lives on for up to a TTL, so the next job for its checkpoint is routed to it
    doomed.kill_group(signal.SIGKILL)
    doomed.popen.wait()
    try:
        job = client.submit({"checkpoint": COPIES[1], "task": "text2image",
                             "params": {"prompt": "x", "num_inference_steps": 2, "height": 32, "width": 32}})
        assert sum(r.llen(q) for q in priority_lists(worker_queue(name))) == 1  # routed to the doomed worker
        done = client.wait(job.id, timeout_s=WAIT_S)
        assert done.status is Status.SUCCEEDED
        assert sum(r.llen(q) for q in priority_lists(worker_queue(name))) == 0
        assert "doomed" not in by_name(client)
    finally:
        r.close()


def test_workers_command_human_and_json(hot_stack: LocalStack) -> None:
    base = [sys.executable, "-m", "hotpipe", "workers", "--api", hot_stack.api_url]
    human = subprocess.run(base, capture_output=True, text=True, check=True).stdout
    assert "warm@" in human and "hot      tiny-sd" in human and "families: stable-diffusion, chroma" in human
    doc = json.loads(subprocess.run([*base, "--json"], capture_output=True, text=True, check=True).stdout)
    assert {w["name"].partition("@")[0] for w in doc["workers"]} >= {"warm", "cold"}
