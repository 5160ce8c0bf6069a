"""``hotpipe reaper``, the standalone reaper, as a real process on the session's redis-server.

Every worker runs a reaper; this one keeps recovery going while no worker does (a pool scaled
to zero): a job whose worker died is requeued with its message, a message lost in flight is
re-sent, and SIGTERM stops it cleanly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from hotpipe.devstack import spawn, wait_until
from hotpipe.shared import keys
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.messages import run_message
from hotpipe.shared.queues import family_lists
from hotpipe.shared.registry import message_job_id
from hotpipe.shared.status import Status
from hotpipe.shared.store import JobStore
from tests.jobs import claim, job_spec

pytestmark = pytest.mark.e2e
FAMILY, OTHER = "stable-diffusion", "stable-diffusion-xl"


def created(store: JobStore, family: str) -> str:
    job_id = new_job_id()
    store.create(job_id, family=family, pipeline="StableDiffusionPipeline", checkpoint="tiny-sd", revision=None,
                 task=Task.TEXT2IMAGE, spec=job_spec(), message=run_message(job_id, family))
    return job_id


def waiting_ids(client: redis.Redis, family: str) -> list[str | None]:
    return [message_job_id(str(m)) for name in family_lists(family) for m in client.lrange(name, 0, -1)]


def test_the_standalone_reaper_recovers_jobs_while_no_worker_runs(redis_server: str, redis_client: redis.Redis,
                                                                    tmp_path: Path) -> None:
    store = JobStore(redis_client, record_ttl_s=600)
    died = created(store, OTHER)
    redis_client.delete(*family_lists(OTHER))  # its worker took the message...
    assert claim(store, died) == 1
    redis_client.zadd(keys.leases(), {died: 0}, xx=True)  # ...and died: the lease lapsed
    lost = created(store, FAMILY)
    redis_client.delete(*family_lists(FAMILY))  # a frozen consumer's BRPOP took it, never delivered
    redis_client.zadd(keys.queued_jobs(), {lost: 0}, xx=True)  # queued long ago

    reaper = spawn("reaper", [sys.executable, "-m", "hotpipe", "reaper"], tmp_path, env={
        "HOTPIPE_REDIS_URL": redis_server, "HOTPIPE_REAPER_INTERVAL_S": "0.2", "HOTPIPE_STALE_QUEUED_S": "60"})
    try:
        wait_until(lambda: (waiting_ids(redis_client, OTHER), waiting_ids(redis_client, FAMILY)) == ([died], [lost]),
                   reaper, 60)
        job = store.get(died)
        assert job is not None and job.record.status is Status.QUEUED and job.record.attempts == 1
        reaper.send(signal.SIGTERM)
        assert reaper.popen.wait(30) == 0
    finally:
        if reaper.popen.poll() is None:
            reaper.kill_group()
        reaper.popen.wait()
    log = reaper.log_path.read_text()
    assert f"reaper: job {died}: its worker stopped renewing the lease; requeued" in log
    assert f"reaper: job {lost}: queued for long" in log


def test_the_reaper_command_is_listed() -> None:
    usage = subprocess.run([sys.executable, "-m", "hotpipe", "reaper", "--help"], capture_output=True, text=True,
                           check=True, timeout=60).stdout
    assert "usage: hotpipe reaper" in usage
