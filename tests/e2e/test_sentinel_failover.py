"""Redis high availability: the primary is SIGKILLed mid-stream and Sentinel promotes a replica.

Real processes on loopback: a Redis primary, two replicas, three sentinels (``tests/sentinels.py``,
failover within a few seconds), S3 (moto), the API and two Celery workers, all configured through
the sentinels only, with ``HOTPIPE_REDIS_SUBMIT_REPLICAS=1`` (a 202 means a replica holds the job).
Two replicas so the new primary has one to wait for after the failover.

A client submits a steady stream of jobs, each with its own Idempotency-Key, retrying one until it
is accepted, as a client honouring 503 + Retry-After does.  The primary is killed after a few.
Afterwards: every accepted job succeeded, once, with one set of images; the jobs in Redis are
exactly the accepted ones (no job that a 503 left behind runs besides its retry); every answer that
was not a 2xx was a 503 with Retry-After; readiness said 503 while no primary was known; and the
API and workers are the processes started before the kill.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from hotpipe.devstack import LocalStack, find_redis_server
from hotpipe.shared.storage import Storage
from tests.e2e.polling import wait_for
from tests.sentinels import SentinelGroup, start_group

pytestmark = pytest.mark.e2e

#: short leases and a quick reaper, so a job whose record lost a write in the failover is taken back soon
ENV = {"HOTPIPE_REDIS_SUBMIT_REPLICAS": "1", "HOTPIPE_REDIS_SUBMIT_WAIT_MS": "1000", "HOTPIPE_LEASE_S": "4",
       "HOTPIPE_REAPER_INTERVAL_S": "1", "HOTPIPE_STALE_QUEUED_S": "5", "HOTPIPE_WORKER_TTL_S": "4"}
PARAMS = {"prompt": "a lighthouse", "num_inference_steps": 3, "height": 32, "width": 32}
#: jobs accepted before the kill, and after the failover (the stream goes on until both are reached)
BEFORE_KILL, AFTER_FAILOVER = 6, 6
STREAM_LIMIT_S = 60.0


@dataclass
class Stream:
    """What the client saw: accepted jobs by key, the answers that were refused, readiness after the kill."""

    accepted: dict[str, str] = field(default_factory=dict)
    refused: list[httpx.Response] = field(default_factory=list)
    ready_after_kill: list[int] = field(default_factory=list)
    killed_at: int = 0


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    g = start_group(tmp_path_factory.mktemp("sentinels"), find_redis_server("system"), replicas=2, sentinels=3)
    yield g
    g.close()


@pytest.fixture(scope="module")
def ha_stack(tmp_path_factory: pytest.TempPathFactory, model_root: Path, group: SentinelGroup) -> Iterator[LocalStack]:
    # redis_url names the first primary only so that LocalStack starts no Redis of its own: every
    # process finds the primary through HOTPIPE_REDIS_SENTINELS, which replaces the URL's host.
    with LocalStack(tmp_path_factory.mktemp("ha"), model_root, redis_url=f"redis://127.0.0.1:{group.primary_port}/0",
                    workers=0, extra_env={**ENV, **group.env()}) as stack:
        stack.storage().client.put_bucket_versioning(Bucket="hotpipe",
                                                     VersioningConfiguration={"Status": "Enabled"})
        stack.start_workers({"w0": {}, "w1": {}})
        yield stack


def submit_until_accepted(api: httpx.Client, key: str, stream: Stream) -> bool:
    """One try of the job named ``key``; True once it is accepted (a 202, or a 200 replay of it)."""
    try:
        answer = api.post("/v1/jobs", json={"checkpoint": "tiny-sd", "task": "text2image",
                                            "params": {**PARAMS, "seed": len(stream.accepted)}},
                          headers={"Idempotency-Key": key})
    except httpx.TransportError as exc:  # the API itself must stay up: this is a failure
        raise AssertionError(f"the API did not answer: {exc}") from exc
    if answer.status_code in (200, 202):
        stream.accepted[key] = answer.json()["id"]
        return True
    stream.refused.append(answer)
    return False


def run_stream(stack: LocalStack, group: SentinelGroup) -> Stream:
    """Submit one job after another; kill the primary after ``BEFORE_KILL``; stop ``AFTER_FAILOVER`` later."""
    stream, deadline = Stream(), time.monotonic() + STREAM_LIMIT_S
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        while len(stream.accepted) < BEFORE_KILL + AFTER_FAILOVER and time.monotonic() < deadline:
            key = f"stream-{len(stream.accepted)}"
            while not submit_until_accepted(api, key, stream) and time.monotonic() < deadline:
                if stream.killed_at:
                    stream.ready_after_kill.append(api.get("/readyz").status_code)
                time.sleep(0.1)
            if len(stream.accepted) == BEFORE_KILL and not stream.killed_at:
                group.procs["primary"].kill_group(signal.SIGKILL)
                stream.killed_at = group.primary_port
                stream.ready_after_kill.append(api.get("/readyz").status_code)
        stream.ready_after_kill.append(api.get("/readyz").status_code)
    return stream


def finished(api: httpx.Client, job_id: str) -> dict[str, Any] | None:
    record: dict[str, Any] = api.get(f"/v1/jobs/{job_id}", params={"wait": 10}).json()
    return None if record["status"] in ("queued", "running") else record


def objects_of(storage: Storage, job_id: str) -> list[str]:
    listing = storage.client.list_object_versions(Bucket=storage.bucket, Prefix=f"{storage.prefix}/{job_id}/")
    return sorted(v["Key"] for v in listing.get("Versions", []))


def test_a_primary_killed_mid_stream_loses_no_accepted_job(ha_stack: LocalStack, group: SentinelGroup) -> None:
    started = {name: proc.popen.pid for name, proc in ha_stack.procs.items()}
    stream = run_stream(ha_stack, group)
    refused = [r.text for r in stream.refused[-3:]]
    assert stream.killed_at and len(stream.accepted) == BEFORE_KILL + AFTER_FAILOVER, refused
    assert group.primary_address()[1] != stream.killed_at  # a replica was promoted

    odd = [(r.status_code, r.text) for r in stream.refused if r.status_code != 503 or not r.headers.get("Retry-After")]
    assert not odd  # the gap answered 503 + Retry-After, nothing else
    assert stream.refused  # ... and the stream did cross it
    assert 503 in stream.ready_after_kill and stream.ready_after_kill[-1] == 200

    storage = ha_stack.storage()
    with httpx.Client(base_url=ha_stack.api_url, timeout=60) as api:
        for key, job_id in stream.accepted.items():
            record = wait_for(functools.partial(finished, api, job_id), f"job {job_id} ({key}) to end", 120)
            assert record["status"] == "succeeded", record
            images = [image["key"] for image in record["result"]["images"]]
            assert len(images) == 1 and set(images) <= set(objects_of(storage, job_id))
        listed = api.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert sorted(job["id"] for job in listed) == sorted(stream.accepted.values())  # one job per key, no stray
    assert len(set(stream.accepted.values())) == len(stream.accepted)

    print(f"failover: {len(stream.accepted)} jobs accepted, {len(stream.refused)} answers 503 + Retry-After "
          f"during the gap, readiness after the kill: {stream.ready_after_kill}")
    alive = {name: proc.popen.pid for name, proc in ha_stack.procs.items() if proc.popen.poll() is None}
    assert alive == started  # the API and both workers rode over the failover without a restart
