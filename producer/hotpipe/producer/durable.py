"""Recording a new job, and with ``HOTPIPE_REDIS_SUBMIT_REPLICAS`` waiting for replicas to hold it.

Redis replicates asynchronously: a job the primary acknowledged can be lost if the primary dies
before a replica has it and Sentinel promotes that replica.  With ``redis_submit_replicas`` n > 0,
the submit sends ``WAIT n timeout`` on the connection that created the job (WAIT counts that
connection's own writes, so it must be the same one) and answers 202 only once n replicas
have it.

When they don't confirm in time (or Redis fails in between), the job may or may not survive a
failover, so the caller gets a 503 that names it (``NotReplicated``), and what happens next
depends on how it can retry:

* with an ``Idempotency-Key``, the job is left as it is: retrying with the same key returns
  this job if it survived, or creates it afresh if it was lost (the key was written with it);
* without one, a retry cannot be matched to it, so the job is canceled (best effort): either
  it is gone or it ends ``canceled`` without running, and the retry is the only job that runs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis

from hotpipe.shared.errors import Unavailable
from hotpipe.shared.job import JobRecord
from hotpipe.shared.settings import Settings
from hotpipe.shared.store import JobStore


class NotReplicated(Unavailable):
    """The job was written to the primary but not confirmed by enough replicas (503, names the job)."""

    code = "not_replicated"

    def __init__(self, message: str, *, job_id: str):
        super().__init__(message)
        self.job_id = job_id

    def to_json(self) -> dict[str, dict[str, str]]:
        body = super().to_json()
        body["error"]["job_id"] = self.job_id
        return body


def record_job(store: JobStore, settings: Settings, job_id: str, *, keyed: bool, **create: Any) -> JobRecord:
    """``store.create(job_id, **create)``, then, with ``settings.redis_submit_replicas``, WAIT for them.

    ``keyed``: the caller sent an Idempotency-Key (see the module's text for what that changes).
    """
    replicas = settings.redis_submit_replicas
    if replicas == 0:
        return store.create(job_id, **create)
    # One connection for the create and its WAIT, held only for this submit.
    pinned = redis.Redis(connection_pool=store.redis.connection_pool, single_connection_client=True)
    try:
        record = JobStore(pinned, store.record_ttl_s).create(job_id, **create)
        acked = _wait(pinned, replicas, settings.redis_submit_wait_ms)
    finally:
        pinned.close()
    if acked < replicas:
        raise _not_replicated(store, job_id, keyed, replicas, settings.redis_submit_wait_ms)
    return record


def _wait(client: redis.Redis, replicas: int, timeout_ms: int) -> int:
    """How many replicas confirmed this connection's writes within ``timeout_ms``; -1 if Redis failed."""
    try:
        return int(client.wait(replicas, timeout_ms))
    except redis.RedisError:
        return -1


def _not_replicated(store: JobStore, job_id: str, keyed: bool, replicas: int, timeout_ms: int) -> NotReplicated:
    unconfirmed = (f"job {job_id} was written to the Redis primary, but {replicas} replica(s) did not confirm it "
                   f"within {timeout_ms} ms (HOTPIPE_REDIS_SUBMIT_REPLICAS), so a failover could lose it")
    if keyed:
        return NotReplicated(f"{unconfirmed}; retry with the same Idempotency-Key: you get this job if it "
                             "survived, or it is created again if it was lost", job_id=job_id)
    with contextlib.suppress(redis.RedisError):  # Redis is gone: then so is the job, with its primary
        store.cancel(job_id)
    return NotReplicated(f"{unconfirmed}; it was canceled so that it cannot run besides your retry: submit "
                         "again (send an Idempotency-Key to make retries safe without this)", job_id=job_id)
