"""A hypothesis state machine over the job store's transitions, against the real redis-server.

Rules drive every write the system makes — submit, claim (and redelivered claims), progress,
succeed, fail, fail-before-start, cancel, mark canceled, renew, release, a lease lapsing,
reap — with attempts that are current or stale.  A plain Python model says what each write
must do; after every step the records in Redis must equal the model: no illegal transition
(a terminal job never changes, a stale attempt never writes), no lost job (every submitted
record is still there), and the lease set holds exactly the running jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from hotpipe.shared import keys
from hotpipe.shared.job import JobError, JobResult, Task, new_job_id
from hotpipe.shared.status import TERMINAL, Status, TransitionError
from hotpipe.shared.store import WORKER_LOST, JobStore
from tests.jobs import job_spec

MAX_ATTEMPTS = 3


@dataclass
class Model:
    """What one job must look like."""

    status: Status = Status.QUEUED
    attempt: int = 0
    cancel_requested: bool = False
    lapsed: bool = False
    error: str | None = None

    def owns(self, attempt: int | None) -> bool:
        return self.status is Status.RUNNING and attempt == self.attempt

    def end(self, status: Status, error: str | None = None) -> None:
        self.status, self.error, self.lapsed = status, error, False


def attempt_of(model: Model, stale: bool) -> int:
    """The current attempt, or one that is not (an older or a made-up newer one)."""
    return model.attempt if not stale else model.attempt - 1 if model.attempt > 1 else model.attempt + 1


class StoreMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")
    #: the session's redis client; set on a subclass per test (hypothesis builds machines from a class)
    client: ClassVar[redis.Redis]

    def __init__(self) -> None:
        super().__init__()
        self.redis = client = type(self).client
        self.store = JobStore(client, record_ttl_s=3600, lease_s=60)
        self.model: dict[str, Model] = {}

    @initialize()
    def empty(self) -> None:
        self.redis.flushdb()

    # -- producer side -------------------------------------------------------------------
    @rule(target=jobs)
    def submit(self) -> str:
        job_id = new_job_id()
        self.store.create(job_id, family="stable-diffusion", pipeline="StableDiffusionPipeline",
                          checkpoint="tiny-sd", revision=None, task=Task.TEXT2IMAGE, spec=job_spec())
        self.model[job_id] = Model()
        return job_id

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        m = self.model[job_id]
        found = self.store.cancel(job_id)
        assert found == ("canceled" if m.status is Status.QUEUED else m.status.value)
        if m.status is Status.QUEUED:
            m.end(Status.CANCELED)
        elif m.status is Status.RUNNING:
            m.cancel_requested = True

    @rule(job_id=jobs)
    def fail_before_start(self, job_id: str) -> None:
        m = self.model[job_id]
        self._expect(m.status is Status.QUEUED, lambda: self.store.fail(job_id, None, JobError(code="x", message="x")))
        if m.status is Status.QUEUED:
            m.end(Status.FAILED, "x")

    # -- worker side ---------------------------------------------------------------------
    @rule(job_id=jobs)
    def claim(self, job_id: str) -> None:
        """A delivery (first or redelivered): only a queued job can be claimed."""
        m = self.model[job_id]
        claimed = self.store.claim_job(job_id, worker="w")
        if m.status is Status.QUEUED:
            assert claimed is not None and claimed.record.attempts == m.attempt + 1
            m.status, m.attempt, m.lapsed = Status.RUNNING, m.attempt + 1, False
        else:
            assert claimed is None

    @rule(job_id=jobs, stale=st.booleans())
    def progress(self, job_id: str, stale: bool) -> None:
        m = self.model[job_id]
        attempt = attempt_of(m, stale)
        verdict = self.store.progress(job_id, attempt, 1, 10)
        assert verdict == ((1 if m.cancel_requested else 0) if m.owns(attempt) else -1)

    @rule(job_id=jobs, stale=st.booleans())
    def renew(self, job_id: str, stale: bool) -> None:
        m = self.model[job_id]
        attempt = attempt_of(m, stale)
        assert self.store.renew(job_id, attempt) == m.owns(attempt)
        if m.owns(attempt):
            m.lapsed = False

    @rule(job_id=jobs, stale=st.booleans(), outcome=st.sampled_from([Status.SUCCEEDED, Status.FAILED,
                                                                      Status.CANCELED]))
    def finish(self, job_id: str, stale: bool, outcome: Status) -> None:
        m = self.model[job_id]
        attempt = attempt_of(m, stale)
        write = {Status.SUCCEEDED: lambda: self.store.succeed(job_id, attempt, JobResult(images=[])),
                 Status.FAILED: lambda: self.store.fail(job_id, attempt, JobError(code="pipeline_error", message="x")),
                 Status.CANCELED: lambda: self.store.mark_canceled(job_id, attempt)}[outcome]
        owner = m.owns(attempt)
        self._expect(owner, write)
        if owner:
            m.end(outcome, "pipeline_error" if outcome is Status.FAILED else None)

    @rule(job_id=jobs, stale=st.booleans())
    def release(self, job_id: str, stale: bool) -> None:
        """The owner gives its job back at shutdown (no attempt cap)."""
        m = self.model[job_id]
        attempt = attempt_of(m, stale)
        given = self.store.release(job_id, attempt)
        if not m.owns(attempt):
            assert given is None
            return
        assert given is not None
        self._taken_back(m, given.outcome, cap=False)
        if given.outcome == "queued":
            self.store.requeue_published(job_id, given.stamp)

    # -- recovery --------------------------------------------------------------------------
    @rule(job_id=jobs)
    def lease_lapses(self, job_id: str) -> None:
        """Time passes without a renewal (the worker died): the deadline moves into the past."""
        m = self.model[job_id]
        if m.status is Status.RUNNING:
            self.redis.zadd(keys.leases(), {job_id: 0})
            m.lapsed = True

    @rule(job_id=jobs)
    def reap(self, job_id: str) -> None:
        m = self.model[job_id]
        taken = self.store.reap(job_id, MAX_ATTEMPTS)
        if not (m.status is Status.RUNNING and m.lapsed):
            assert taken is None
            return
        assert taken is not None
        self._taken_back(m, taken.outcome, cap=True)
        if taken.outcome == "queued":
            self.store.requeue_published(job_id, taken.stamp)

    def _taken_back(self, m: Model, outcome: str, cap: bool) -> None:
        expected = ("canceled" if m.cancel_requested
                    else "failed" if cap and m.attempt >= MAX_ATTEMPTS else "queued")
        assert outcome == expected
        if outcome == "queued":
            m.status, m.lapsed = Status.QUEUED, False
        else:
            m.end(Status(outcome), WORKER_LOST if outcome == "failed" else None)
        m.cancel_requested = False if outcome == "queued" else m.cancel_requested

    @staticmethod
    def _expect(allowed: bool, write: object) -> None:
        if allowed:
            write()  # type: ignore[operator]
        else:
            with pytest.raises(TransitionError):
                write()  # type: ignore[operator]

    # -- what must always hold -----------------------------------------------------------
    @invariant()
    def records_match_the_model(self) -> None:
        for job_id, m in self.model.items():
            stored = self.store.get(job_id)
            assert stored is not None, f"job {job_id} lost"
            rec = stored.record
            assert (rec.status, rec.attempts) == (m.status, m.attempt), (job_id, rec, m)
            if rec.status is Status.RUNNING:
                assert rec.cancel_requested == m.cancel_requested
            if rec.status is Status.FAILED:
                assert rec.error is not None and rec.error.code in (m.error, "x")
            if rec.status in TERMINAL:
                assert rec.finished_at is not None

    @invariant()
    def leases_are_exactly_the_running_jobs(self) -> None:
        running = {job_id for job_id, m in self.model.items() if m.status is Status.RUNNING}
        assert set(self.redis.zrange(keys.leases(), 0, -1)) == running

    @invariant()
    def the_queued_set_is_exactly_the_queued_jobs(self) -> None:
        """What the lost-message sweep reads (``keys.queued_jobs``) never misses or keeps a job."""
        queued = {job_id for job_id, m in self.model.items() if m.status is Status.QUEUED}
        assert set(self.redis.zrange(keys.queued_jobs(), 0, -1)) == queued


def test_store_transitions_are_legal_and_lose_nothing(redis_client: redis.Redis) -> None:
    bound = type("BoundStoreMachine", (StoreMachine,), {"client": redis_client})
    run_state_machine_as_test(bound,
                              settings=settings(max_examples=60, stateful_step_count=40, deadline=None,
                                                suppress_health_check=[HealthCheck.too_slow]))
