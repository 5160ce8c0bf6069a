"""Every store operation, from every status, against a real redis-server: each status change a script
makes is a pair of ``status.ALLOWED_FROM``, and together they make every pair the table has."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import pytest
import redis

from hotpipe.shared import keys
from hotpipe.shared.job import ImageResult, JobError, JobResult, Task, new_job_id
from hotpipe.shared.status import ALLOWED_FROM, Status, TransitionError
from hotpipe.shared.store import JobOptions, JobStore
from tests.jobs import job_spec

RESULT = JobResult(images=[ImageResult(key="jobs/x/0.png", width=8, height=8, content_type="image/png",
                                       sha256="0" * 64)], sidecar_key="jobs/x/job.json")
ERROR = JobError(code="boom", message="it broke")
#: the attempt the fenced operations name (the records below are at attempt 0 or this one)
ATTEMPT = 1

Op = Callable[[JobStore, str], object]
#: the operations whose scripts may change a job's status (transition, requeue, cancel, expire_queued)
MOVES: dict[str, Op] = {
    "claim_job": lambda s, j: s.claim_job(j, "worker-1"),
    "succeed": lambda s, j: s.succeed(j, ATTEMPT, RESULT),
    "fail": lambda s, j: s.fail(j, ATTEMPT, ERROR),
    "fail_unstarted": lambda s, j: s.fail(j, None, ERROR),
    "mark_canceled": lambda s, j: s.mark_canceled(j, ATTEMPT),
    "cancel": lambda s, j: s.cancel(j),
    "reap": lambda s, j: s.reap(j, max_attempts=3),
    "reap_last_attempt": lambda s, j: s.reap(j, max_attempts=ATTEMPT),
    "release": lambda s, j: s.release(j, ATTEMPT),
    "expire_queued": lambda s, j: s.expire_queued(j),
}
#: the operations whose scripts never change a job's status
STAYS: dict[str, Op] = {
    "progress": lambda s, j: s.progress(j, ATTEMPT, 1, 2),
    "set_stage": lambda s, j: s.set_stage(j, ATTEMPT, "uploading"),
    "renew": lambda s, j: s.renew(j, ATTEMPT),
    "touch_queued": lambda s, j: s.touch_queued(j),
    "adopt_requeue": lambda s, j: s.adopt_requeue(j, 0),
}
#: every record shape the operations are tried on: status, attempt, cancel requested, queue deadline passed
SHAPES = list(itertools.product(Status, (0, ATTEMPT), (False, True), (False, True)))


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=600)


def job_in(store: JobStore, status: Status, attempt: int, cancel_requested: bool, deadline_passed: bool) -> str:
    """A job whose record is in ``status`` (lease lapsed, requeue outbox entry old), as a script finds it."""
    job_id = new_job_id()
    store.create(job_id, family="stable-diffusion", pipeline="StableDiffusionPipeline", checkpoint="tiny-sd",
                 revision=None, task=Task.TEXT2IMAGE, spec=job_spec(), options=JobOptions(queue_timeout_s=3600))
    fields = ["status", status.value, "attempt", str(attempt), "cancel_requested", "1" if cancel_requested else "0"]
    if deadline_passed:
        fields += ["queue_deadline", "1"]
    store.redis.hset(keys.job(job_id), items=fields)
    store.redis.zadd(keys.leases(), {job_id: 0})
    store.redis.zadd(keys.requeues(), {job_id: 0})
    return job_id


def changes(store: JobStore, ops: dict[str, Op]) -> dict[str, set[tuple[Status, Status]]]:
    """Each operation's status changes (from, to), over every record shape."""
    seen: dict[str, set[tuple[Status, Status]]] = {name: set() for name in ops}
    for (name, op), shape in itertools.product(ops.items(), SHAPES):
        job_id = job_in(store, *shape)
        with contextlib.suppress(TransitionError):  # refused: the record is as it was
            op(store, job_id)
        after = Status(str(store.redis.hget(keys.job(job_id), "status")))
        if after is not shape[0]:
            seen[name].add((shape[0], after))
    return seen


def test_every_status_change_is_in_the_table_and_every_pair_is_made(store: JobStore) -> None:
    seen = changes(store, MOVES)
    for name, pairs in seen.items():
        outside = {(a.value, b.value) for a, b in pairs if a not in ALLOWED_FROM[b]}
        assert not outside, f"{name} made moves status.ALLOWED_FROM does not allow: {outside}"
    table = {(source, target) for target, sources in ALLOWED_FROM.items() for source in sources}
    assert set().union(*seen.values()) == table


def test_reads_renewals_and_stages_never_change_a_status(store: JobStore) -> None:
    assert changes(store, STAYS) == {name: set() for name in STAYS}
