"""JobStore against a real redis-server: guarded, fenced transitions, TTLs, waiting and events."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from hotpipe.shared import keys
from hotpipe.shared.job import ImageResult, JobError, JobRecord, JobResult, Progress, Task, new_job_id
from hotpipe.shared.status import TERMINAL, Status, TransitionError
from hotpipe.shared.store import WORKER_LOST, AsyncJobReader, JobStore, Requeue, parse_event
from tests.jobs import claim, job_spec

RECORD_TTL_S = 600
RESULT = JobResult(images=[ImageResult(key="jobs/x/0.png", width=8, height=8, content_type="image/png",
                                       sha256="0" * 64)], sidecar_key="jobs/x/job.json")
ERROR = JobError(code="boom", message="it broke")
SPEC = job_spec()

#: the worker-side terminal writes, each fenced by an attempt number
Finish = Callable[[JobStore, str, int], None]
FINISHES: dict[str, tuple[Finish, Status]] = {
    "succeed": (lambda s, j, a: s.succeed(j, a, RESULT), Status.SUCCEEDED),
    "fail": (lambda s, j, a: s.fail(j, a, ERROR), Status.FAILED),
    "mark_canceled": (lambda s, j, a: s.mark_canceled(j, a), Status.CANCELED),
}


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=RECORD_TTL_S)


def create(store: JobStore, job_id: str | None = None) -> str:
    job_id = job_id or new_job_id()
    store.create(job_id, family="stable-diffusion", pipeline="StableDiffusionPipeline", checkpoint="tiny-sd",
                 revision=None, task=Task.TEXT2IMAGE, spec=SPEC)
    return job_id


def raw(store: JobStore, job_id: str) -> dict[str, str]:
    return store.redis.hgetall(keys.job(job_id))  # type: ignore[return-value]


def ttl(store: JobStore, job_id: str) -> int:
    return int(store.redis.ttl(keys.job(job_id)))


def status(store: JobStore, job_id: str) -> Status:
    job = store.get(job_id)
    assert job is not None
    return job.record.status


def test_create_writes_a_queued_record(store: JobStore) -> None:
    job_id = create(store)
    job = store.get(job_id)
    assert job is not None
    assert (job.record.status, job.record.attempts, job.record.checkpoint) == (Status.QUEUED, 0, "tiny-sd")
    assert job.spec == SPEC
    assert job.record.revision is None and not job.cancel_requested


def test_create_refuses_an_existing_id(store: JobStore) -> None:
    job_id = create(store)
    claim(store, job_id)
    before = raw(store, job_id)
    with pytest.raises(TransitionError):
        create(store, job_id)
    assert raw(store, job_id) == before


def test_get_of_unknown_job_is_none(store: JobStore) -> None:
    assert store.get(new_job_id()) is None


def test_claim_moves_queued_to_running_once(store: JobStore) -> None:
    job_id = create(store)
    assert claim(store, job_id) == 1
    job = store.get(job_id)
    assert job is not None
    assert (job.record.status, job.record.attempts) == (Status.RUNNING, 1)
    assert job.record.started_at is not None
    assert claim(store, job_id) is None
    assert raw(store, job_id)["attempt"] == "1"


def test_claim_of_unknown_job_is_none(store: JobStore) -> None:
    assert claim(store, new_job_id()) is None


def test_progress_is_fenced_by_attempt(store: JobStore) -> None:
    job_id = create(store)
    attempt = claim(store, job_id)
    assert attempt is not None
    assert store.progress(job_id, attempt, 3, 10) == 0
    for stale in (attempt - 1, attempt + 1):
        assert store.progress(job_id, stale, 9, 10) == -1
    job = store.get(job_id)
    assert job is not None and job.record.progress == Progress(step=3, total=10)


def test_progress_of_a_queued_job_is_refused(store: JobStore) -> None:
    job_id = create(store)
    assert store.progress(job_id, 0, 1, 10) == -1
    assert "progress" not in raw(store, job_id)


@pytest.mark.parametrize("name", FINISHES)
def test_finish_with_own_attempt_ends_the_job_with_a_ttl(store: JobStore, name: str) -> None:
    finish, target = FINISHES[name]
    job_id = create(store)
    attempt = claim(store, job_id)
    assert attempt is not None
    finish(store, job_id, attempt)
    job = store.get(job_id)
    assert job is not None
    assert job.record.status == target and job.record.finished_at is not None
    assert job.record.result == (RESULT if target == Status.SUCCEEDED else None)
    assert job.record.error == (ERROR if target == Status.FAILED else None)
    assert 0 < ttl(store, job_id) <= RECORD_TTL_S


@pytest.mark.parametrize("offset", [-1, 1, 5])
@pytest.mark.parametrize("name", FINISHES)
def test_finish_with_stale_attempt_raises_and_changes_nothing(store: JobStore, name: str, offset: int) -> None:
    finish, target = FINISHES[name]
    job_id = create(store)
    attempt = claim(store, job_id)
    assert attempt is not None
    before = raw(store, job_id)
    with pytest.raises(TransitionError) as exc:
        finish(store, job_id, attempt + offset)
    assert (exc.value.current, exc.value.target) == (Status.RUNNING, target)
    assert raw(store, job_id) == before
    assert ttl(store, job_id) == -1


@pytest.mark.parametrize("name", FINISHES)
def test_fenced_finish_of_a_queued_job_is_refused(store: JobStore, name: str) -> None:
    finish, _ = FINISHES[name]
    job_id = create(store)
    with pytest.raises(TransitionError):
        finish(store, job_id, 0)
    assert status(store, job_id) == Status.QUEUED


def test_fail_without_attempt_ends_a_queued_job(store: JobStore) -> None:
    job_id = create(store)
    store.fail(job_id, None, ERROR)
    job = store.get(job_id)
    assert job is not None and (job.record.status, job.record.error) == (Status.FAILED, ERROR)
    assert ttl(store, job_id) > 0


def test_fail_without_attempt_leaves_a_running_job_alone(store: JobStore) -> None:
    job_id = create(store)
    claim(store, job_id)
    before = raw(store, job_id)
    with pytest.raises(TransitionError):
        store.fail(job_id, None, ERROR)
    assert raw(store, job_id) == before


def test_finish_of_unknown_job_raises(store: JobStore) -> None:
    with pytest.raises(TransitionError) as exc:
        store.succeed(new_job_id(), 1, RESULT)
    assert exc.value.current is None


def test_cancel_of_queued_job_cancels_it_with_a_ttl(store: JobStore) -> None:
    job_id = create(store)
    assert store.cancel(job_id) == "canceled"
    assert status(store, job_id) == Status.CANCELED
    assert ttl(store, job_id) > 0
    assert claim(store, job_id) is None


def test_cancel_of_running_job_requests_a_stop(store: JobStore) -> None:
    job_id = create(store)
    attempt = claim(store, job_id)
    assert attempt is not None
    assert store.cancel(job_id) == "running"
    job = store.get(job_id)
    assert job is not None and job.record.status == Status.RUNNING and job.record.cancel_requested
    assert ttl(store, job_id) == -1
    assert store.progress(job_id, attempt, 1, 10) == 1
    store.mark_canceled(job_id, attempt)
    assert status(store, job_id) == Status.CANCELED


def test_cancel_of_finished_job_changes_nothing(store: JobStore) -> None:
    job_id = create(store)
    store.fail(job_id, None, ERROR)
    before = raw(store, job_id)
    assert store.cancel(job_id) == "failed"
    assert raw(store, job_id) == before


def test_cancel_of_unknown_job_is_none(store: JobStore) -> None:
    assert store.cancel(new_job_id()) is None


def test_only_finished_records_expire(store: JobStore) -> None:
    job_id = create(store)
    assert ttl(store, job_id) == -1
    attempt = claim(store, job_id)
    assert attempt is not None
    assert ttl(store, job_id) == -1
    store.progress(job_id, attempt, 1, 2)
    assert ttl(store, job_id) == -1
    store.succeed(job_id, attempt, RESULT)
    assert 0 < ttl(store, job_id) <= RECORD_TTL_S


def wait(store: JobStore, job_id: str, timeout_s: float) -> JobRecord | None:
    """AsyncJobReader.wait on its own event loop and asyncio client of the same server."""

    async def go() -> JobRecord | None:
        kw = store.redis.connection_pool.connection_kwargs
        client = aioredis.Redis(host=kw["host"], port=kw["port"], db=kw.get("db", 0), decode_responses=True)
        reader = AsyncJobReader(client)
        try:
            return await reader.wait(job_id, timeout_s)
        finally:
            await reader.aclose()

    return asyncio.run(go())


def test_wait_wakes_when_another_thread_finishes_the_job(store: JobStore) -> None:
    job_id = create(store)
    attempt = claim(store, job_id)
    assert attempt is not None

    def finish_once_waiter_listens() -> None:
        channel = keys.job_events(job_id)
        while store.redis.pubsub_numsub(channel)[0][1] == 0:
            time.sleep(0.01)
        store.succeed(job_id, attempt, RESULT)

    worker = threading.Thread(target=finish_once_waiter_listens, daemon=True)
    worker.start()
    record = wait(store, job_id, timeout_s=30)
    worker.join(5)
    assert record is not None and record.status == Status.SUCCEEDED and record.result == RESULT


def test_wait_returns_the_running_record_after_the_timeout(store: JobStore) -> None:
    job_id = create(store)
    claim(store, job_id)
    record = wait(store, job_id, timeout_s=0.2)
    assert record is not None and record.status == Status.RUNNING


def test_wait_on_unknown_job_is_none(store: JobStore) -> None:
    assert wait(store, new_job_id(), timeout_s=0.1) is None


def test_every_change_is_published_on_the_job_channel(store: JobStore) -> None:
    job_id = create(store)
    with store.redis.pubsub() as sub:
        sub.subscribe(keys.job_events(job_id))
        attempt = claim(store, job_id)
        assert attempt is not None
        store.progress(job_id, attempt, 1, 4)
        store.cancel(job_id)
        store.progress(job_id, attempt + 1, 2, 4)  # stale: publishes nothing
        store.mark_canceled(job_id, attempt)
        events: list[tuple[str, JobRecord]] = []
        while len(events) < 4 and (msg := sub.get_message(timeout=5.0)) is not None:
            if msg["type"] == "message":
                events.append(parse_event(msg["data"]))
    assert [name for name, _ in events] == ["running", "progress", "cancel_requested", "canceled"]
    assert [r.status.value for _, r in events] == ["running", "running", "running", "canceled"]
    assert events[1][1].progress is not None and events[1][1].progress.step == 1
    assert events[2][1].cancel_requested


# -- leases, reaping and the requeue outbox ---------------------------------------------

def lease(store: JobStore, job_id: str) -> float | None:
    """The job's lease deadline (server ms), None when it holds none."""
    score = store.redis.zscore(keys.leases(), job_id)
    return None if score is None else float(score)


def server_ms(store: JobStore) -> int:
    sec, usec = store.redis.time()
    return int(sec) * 1000 + int(usec) // 1000


def lapse(store: JobStore, job_id: str) -> None:
    """What a worker that stopped heartbeating leaves behind: a deadline long past."""
    store.redis.zadd(keys.leases(), {job_id: 0}, xx=True)
    assert lease(store, job_id) == 0, "only a running job has a lease to lapse"


def outbox(store: JobStore) -> dict[str, int]:
    entries: list[tuple[str, float]] = store.redis.zrange(keys.requeues(), 0, -1, withscores=True)  # type: ignore[assignment]
    return {member: int(score) for member, score in entries}


def claimed(store: JobStore) -> tuple[str, int]:
    job_id = create(store)
    attempt = claim(store, job_id)
    assert attempt is not None
    return job_id, attempt


def test_claim_takes_a_lease_on_the_server_clock(store: JobStore) -> None:
    job_id = create(store)
    assert lease(store, job_id) is None
    before = server_ms(store)
    claim(store, job_id)
    deadline = lease(store, job_id)
    assert deadline is not None and before < deadline <= server_ms(store) + store.lease_ms


@pytest.mark.parametrize("name", FINISHES)
def test_every_terminal_write_drops_the_lease(store: JobStore, name: str) -> None:
    finish, _ = FINISHES[name]
    job_id, attempt = claimed(store)
    finish(store, job_id, attempt)
    assert lease(store, job_id) is None


def test_renew_by_the_owner_pushes_the_deadline_out(store: JobStore) -> None:
    job_id, attempt = claimed(store)
    lapse(store, job_id)
    assert store.renew(job_id, attempt) is True
    deadline = lease(store, job_id)
    assert deadline is not None and deadline > server_ms(store) - 1
    assert store.expired_leases() == []


@pytest.mark.parametrize("offset", [-1, 1])
def test_renew_by_another_attempt_is_refused_and_changes_nothing(store: JobStore, offset: int) -> None:
    job_id, attempt = claimed(store)
    lapse(store, job_id)
    assert store.renew(job_id, attempt + offset) is False
    assert lease(store, job_id) == 0


def test_renew_never_gives_a_finished_or_queued_job_a_lease(store: JobStore) -> None:
    queued = create(store)
    assert store.renew(queued, 0) is False
    job_id, attempt = claimed(store)
    store.succeed(job_id, attempt, RESULT)
    assert store.renew(job_id, attempt) is False
    assert lease(store, queued) is None and lease(store, job_id) is None


def test_reap_leaves_a_live_lease_alone(store: JobStore) -> None:
    job_id, _ = claimed(store)
    before = raw(store, job_id)
    assert store.expired_leases() == []
    assert store.reap(job_id, max_attempts=3) is None
    assert raw(store, job_id) == before and lease(store, job_id) is not None


def test_reap_requeues_an_expired_job_keeping_its_attempt(store: JobStore) -> None:
    job_id = create(store)
    job = store.claim_job(job_id, worker="w1@host pid=1")
    assert job is not None and job.worker == "w1@host pid=1"
    store.progress(job_id, 1, 3, 10)
    lapse(store, job_id)
    assert store.expired_leases() == [job_id]

    taken = store.reap(job_id, max_attempts=3)
    assert taken is not None and (taken.outcome, taken.family) == ("queued", "stable-diffusion")
    after = store.get(job_id)
    assert after is not None
    assert (after.record.status, after.record.attempts, after.record.progress, after.worker) == (
        Status.QUEUED, 1, None, None)
    assert lease(store, job_id) is None and ttl(store, job_id) == -1
    assert outbox(store) == {job_id: taken.stamp}
    assert store.reap(job_id, max_attempts=3) is None  # nothing left to take back


def test_stale_attempt_is_fenced_after_a_reap_and_a_new_claim(store: JobStore) -> None:
    job_id, first = claimed(store)
    lapse(store, job_id)
    store.reap(job_id, max_attempts=3)
    assert store.progress(job_id, first, 5, 10) == -1  # requeued: nobody owns it
    assert store.renew(job_id, first) is False
    second = claim(store, job_id)
    assert second == first + 1
    assert store.progress(job_id, first, 5, 10) == -1 and store.renew(job_id, first) is False
    with pytest.raises(TransitionError, match="superseded"):
        store.succeed(job_id, first, RESULT)
    store.succeed(job_id, second, RESULT)
    assert status(store, job_id) == Status.SUCCEEDED


def test_reap_at_the_attempt_cap_ends_the_job_failed_worker_lost(store: JobStore) -> None:
    job_id, _ = claimed(store)
    lapse(store, job_id)
    taken = store.reap(job_id, max_attempts=1)
    assert taken is not None and taken.outcome == "failed"
    job = store.get(job_id)
    assert job is not None and job.record.status == Status.FAILED and job.record.finished_at is not None
    assert job.record.error is not None and job.record.error.code == WORKER_LOST
    assert 0 < ttl(store, job_id) <= RECORD_TTL_S
    assert lease(store, job_id) is None and outbox(store) == {}


def test_reap_honours_a_pending_cancel(store: JobStore) -> None:
    job_id, _ = claimed(store)
    store.cancel(job_id)
    lapse(store, job_id)
    taken = store.reap(job_id, max_attempts=3)
    assert taken is not None and taken.outcome == "canceled"
    assert status(store, job_id) == Status.CANCELED and ttl(store, job_id) > 0 and outbox(store) == {}


def test_reap_drops_a_lease_whose_record_is_gone(store: JobStore) -> None:
    job_id, _ = claimed(store)
    lapse(store, job_id)
    store.redis.delete(keys.job(job_id))
    assert store.reap(job_id, max_attempts=3) is None
    assert store.expired_leases() == []


def test_concurrent_reapers_take_a_job_back_exactly_once(store: JobStore) -> None:
    job_id, _ = claimed(store)
    lapse(store, job_id)
    barrier = threading.Barrier(8)

    def reap() -> object:
        barrier.wait()
        return store.reap(job_id, max_attempts=3)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: reap(), range(8)))
    assert sum(o is not None for o in outcomes) == 1
    assert status(store, job_id) == Status.QUEUED and len(outbox(store)) == 1


def test_release_by_the_owner_requeues_regardless_of_the_cap(store: JobStore) -> None:
    job_id, attempt = claimed(store)
    assert store.release(job_id, attempt + 1) is None
    given_back = store.release(job_id, attempt)
    assert given_back is not None and given_back.outcome == "queued"
    job = store.get(job_id)
    assert job is not None and (job.record.status, job.record.attempts) == (Status.QUEUED, attempt)
    assert outbox(store) == {job_id: given_back.stamp} and lease(store, job_id) is None
    assert store.release(job_id, attempt) is None


def test_requeue_published_clears_only_its_own_stamp(store: JobStore) -> None:
    job_id, _ = claimed(store)
    lapse(store, job_id)
    taken = store.reap(job_id, max_attempts=3)
    assert taken is not None
    store.redis.zadd(keys.requeues(), {job_id: taken.stamp + 1})  # a later requeue of the same job
    store.requeue_published(job_id, taken.stamp)
    assert outbox(store) == {job_id: taken.stamp + 1}
    store.requeue_published(job_id, taken.stamp + 1)
    assert outbox(store) == {}


def test_orphaned_requeue_is_adopted_once_and_dropped_once_claimed(store: JobStore) -> None:
    job_id, _ = claimed(store)
    lapse(store, job_id)
    assert store.reap(job_id, max_attempts=3) is not None
    assert store.orphaned_requeues(silence_s=30) == []  # its reaper may still publish
    store.redis.zadd(keys.requeues(), {job_id: 0})  # ... but it died long ago
    assert store.orphaned_requeues(silence_s=30) == [job_id]
    adopted = store.adopt_requeue(job_id, silence_s=30)
    assert adopted is not None and (adopted.outcome, adopted.family) == ("queued", "stable-diffusion")
    assert store.adopt_requeue(job_id, silence_s=30) is None  # re-stamped: one adopter per silence
    claim(store, job_id)
    store.redis.zadd(keys.requeues(), {job_id: 0})
    assert store.adopt_requeue(job_id, silence_s=30) is None  # a message reached it: nothing owed
    assert outbox(store) == {}


def test_requeue_is_announced_with_the_record(store: JobStore) -> None:
    job_id, _ = claimed(store)
    lapse(store, job_id)
    with store.redis.pubsub() as sub:
        sub.subscribe(keys.job_events(job_id))
        store.reap(job_id, max_attempts=3)
        event = None
        while event is None and (msg := sub.get_message(timeout=5.0)) is not None:
            if msg["type"] == "message":
                event = parse_event(msg["data"])
    assert event is not None and event[0] == "queued" and event[1].status == Status.QUEUED


class LifecycleMachine(RuleBasedStateMachine):
    """Random claim/progress/finish/cancel/heartbeat/reap/release/redeliver sequences, including
    stale writes and dead workers, against a model."""

    store: ClassVar[JobStore]

    @initialize()
    def create_job(self) -> None:
        self.job_id = create(self.store)
        self.status = Status.QUEUED
        self.attempt = 0
        self.progress: Progress | None = None
        self.cancel_requested = False
        self.lapsed = False  # the running attempt's lease ran out (its worker died)
        self.owed: int | None = None  # stamp of the outbox entry: a requeue's message not yet published
        self.frozen: dict[str, str] | None = None  # the raw record once terminal

    def _fence(self, stale: int) -> int:
        return self.attempt + stale

    def _owned(self, fence: int | None) -> bool:
        return self.status == Status.RUNNING and fence == self.attempt

    def _expect_finish(self, call: Callable[[], None], ok: bool, target: Status) -> None:
        if ok:
            call()
            self.status = target
        else:
            with pytest.raises(TransitionError):
                call()

    def _taken_back(self, got: Requeue | None, expected: Status | None) -> None:
        if expected is None:
            assert got is None
            return
        assert got is not None and got.outcome == expected.value
        self.status, self.lapsed = expected, False
        if expected == Status.QUEUED:
            self.progress, self.owed = None, got.stamp

    @rule()
    def claim(self) -> None:
        got = claim(self.store, self.job_id)
        if self.status == Status.QUEUED:
            self.attempt += 1
            self.status = Status.RUNNING
            self.lapsed = False
            assert got == self.attempt
        else:
            assert got is None

    @rule()
    def redeliver(self) -> None:
        """The same message again (visibility timeout, a reaper's duplicate): claim or stand down."""
        self.claim()

    @rule(stale=st.sampled_from([0, 0, -1, 1]))
    def heartbeat(self, stale: int) -> None:
        fence = self._fence(stale)
        owned = self._owned(fence)
        assert self.store.renew(self.job_id, fence) is owned
        if owned:
            self.lapsed = False

    @rule()
    def worker_dies(self) -> None:
        if self.status == Status.RUNNING:
            lapse(self.store, self.job_id)
            self.lapsed = True

    @rule(cap=st.integers(1, 3))
    def reap(self, cap: int) -> None:
        expected = None
        if self.status == Status.RUNNING and self.lapsed:
            expected = (Status.CANCELED if self.cancel_requested else
                        Status.FAILED if self.attempt >= cap else Status.QUEUED)
        self._taken_back(self.store.reap(self.job_id, cap), expected)

    @rule(stale=st.sampled_from([0, -1, 1]))
    def release(self, stale: int) -> None:
        fence = self._fence(stale)
        expected = None
        if self._owned(fence):
            expected = Status.CANCELED if self.cancel_requested else Status.QUEUED
        self._taken_back(self.store.release(self.job_id, fence), expected)

    @rule()
    def publish_requeue(self) -> None:
        if self.owed is not None:
            self.store.requeue_published(self.job_id, self.owed)
            self.owed = None

    @rule(stale=st.sampled_from([0, 0, -1, 1]), step=st.integers(0, 50))
    def progress_step(self, stale: int, step: int) -> None:
        fence = self._fence(stale)
        got = self.store.progress(self.job_id, fence, step, 50)
        if self._owned(fence):
            assert got == (1 if self.cancel_requested else 0)
            self.progress = Progress(step=step, total=50)
        else:
            assert got == -1

    @rule(stale=st.sampled_from([0, -1, 1]))
    def succeed(self, stale: int) -> None:
        fence = self._fence(stale)
        self._expect_finish(lambda: self.store.succeed(self.job_id, fence, RESULT), self._owned(fence),
                            Status.SUCCEEDED)

    @rule(stale=st.sampled_from([None, 0, -1, 1]))
    def fail(self, stale: int | None) -> None:
        fence = None if stale is None else self._fence(stale)
        ok = self.status == Status.QUEUED if fence is None else self._owned(fence)
        self._expect_finish(lambda: self.store.fail(self.job_id, fence, ERROR), ok, Status.FAILED)

    @rule(stale=st.sampled_from([0, -1, 1]))
    def mark_canceled(self, stale: int) -> None:
        fence = self._fence(stale)
        self._expect_finish(lambda: self.store.mark_canceled(self.job_id, fence), self._owned(fence),
                            Status.CANCELED)

    @rule()
    def cancel(self) -> None:
        found = self.store.cancel(self.job_id)
        assert found == (Status.CANCELED.value if self.status == Status.QUEUED else self.status.value)
        if self.status == Status.QUEUED:
            self.status = Status.CANCELED
        elif self.status == Status.RUNNING:
            self.cancel_requested = True

    @invariant()
    def record_matches_model(self) -> None:
        job = self.store.get(self.job_id)
        assert job is not None
        rec = job.record
        assert (rec.status, rec.attempts, rec.progress, rec.cancel_requested) == (
            self.status, self.attempt, self.progress, self.cancel_requested)
        assert (ttl(self.store, self.job_id) > 0) == (self.status in TERMINAL)

    @invariant()
    def running_jobs_and_only_they_hold_a_lease(self) -> None:
        deadline = lease(self.store, self.job_id)
        assert (deadline is not None) == (self.status == Status.RUNNING)
        assert (deadline == 0) == (self.status == Status.RUNNING and self.lapsed)

    @invariant()
    def outbox_holds_what_is_owed(self) -> None:
        stamp = self.store.redis.zscore(keys.requeues(), self.job_id)
        assert (None if stamp is None else int(stamp)) == self.owed

    @invariant()
    def listed_under_its_status_only(self) -> None:
        for status in Status:
            member = self.store.redis.zscore(keys.jobs_index(keys.DEFAULT_TENANT, status.value), self.job_id)
            assert (member is not None) == (status == self.status), status
        assert self.store.redis.zscore(keys.jobs_index(keys.DEFAULT_TENANT), self.job_id) is not None

    @invariant()
    def terminal_record_never_changes(self) -> None:
        if self.status not in TERMINAL:
            return
        now = raw(self.store, self.job_id)
        if self.frozen is None:
            self.frozen = now
        assert now == self.frozen


def test_lifecycle_state_machine(store: JobStore) -> None:
    LifecycleMachine.store = store
    run_state_machine_as_test(
        LifecycleMachine, settings=hsettings(max_examples=60, stateful_step_count=30, deadline=None, database=None))
