"""JobStore lifecycle additions against a real redis-server: idempotent creates, per-tenant
listing indexes kept by the transitions, stages, queue deadlines, the webhook outbox."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from hotpipe.shared import keys
from hotpipe.shared.job import JobError, Stage, Task, new_job_id
from hotpipe.shared.messages import run_message
from hotpipe.shared.queues import family_lists, worker_queue
from hotpipe.shared.reaper import Reaper
from hotpipe.shared.status import Status
from hotpipe.shared.store import DEADLINE_EXCEEDED, Cursor, JobExists, JobOptions, JobStore, KeyTaken
from hotpipe.shared.webhook_outbox import Outbox
from tests.e2e.polling import wait_for
from tests.jobs import claim, job_spec
from tests.shared.test_store import RESULT

RECORD_TTL_S = 600


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=RECORD_TTL_S)


def create(store: JobStore, job_id: str | None = None, **options: object) -> str:
    """A job created with its run message, as a submit creates it."""
    job_id = job_id or new_job_id()
    store.create(job_id, family="stable-diffusion", pipeline="StableDiffusionPipeline", checkpoint="tiny-sd",
                 revision=None, task=Task.TEXT2IMAGE, spec=job_spec(),
                 options=JobOptions(**options), message=run_message(job_id, "stable-diffusion"))  # type: ignore[arg-type]
    return job_id


def messages(store: JobStore) -> list[str]:
    """Job ids of the run messages waiting on the family's queue (every priority list)."""
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0]
            for name in family_lists("stable-diffusion") for m in store.redis.lrange(name, 0, -1)]


# -- create: the record and its message, together or not at all ------------------------------
def test_create_pushes_the_run_message_with_the_record(store: JobStore) -> None:
    job_id = create(store)
    assert messages(store) == [job_id]
    assert listed(store) == [job_id]


def test_a_refused_create_pushes_no_message(store: JobStore) -> None:
    first = create(store, "my-job-2", idempotency_key="k")
    with pytest.raises(JobExists):
        create(store, "my-job-2")
    with pytest.raises(KeyTaken):
        create(store, idempotency_key="k")
    assert messages(store) == [first]


def listed(store: JobStore, tenant: str = keys.DEFAULT_TENANT, status: Status | None = None) -> list[str]:
    """Every id in the listing, page by page (pages of 2, so cursors are exercised)."""
    ids: list[str] = []
    cursor: Cursor | None = None
    while True:
        records, cursor = store.list_jobs(tenant, status, 2, cursor)
        ids += [r.id for r in records]
        if cursor is None:
            return ids


# -- idempotency ----------------------------------------------------------------------------
def test_an_idempotency_key_creates_one_job_and_names_it(store: JobStore) -> None:
    first = create(store, fingerprint="f1", idempotency_key="k")
    assert store.idempotent_job(keys.DEFAULT_TENANT, "k") == (first, "f1")
    with pytest.raises(KeyTaken) as taken:
        create(store, fingerprint="f2", idempotency_key="k")
    assert (taken.value.job_id, taken.value.fingerprint) == (first, "f1")
    assert listed(store) == [first]  # the refused create wrote nothing
    assert 0 < int(store.redis.ttl(keys.idempotency(keys.DEFAULT_TENANT, "k"))) <= 24 * 3600


def test_idempotency_keys_are_per_tenant(store: JobStore) -> None:
    a = create(store, tenant="a", idempotency_key="k")
    b = create(store, tenant="b", idempotency_key="k")
    assert a != b and listed(store, "a") == [a] and listed(store, "b") == [b]


def test_a_taken_id_reports_who_took_it(store: JobStore) -> None:
    job_id = create(store, "my-job-1", fingerprint="f1", tenant="a")
    with pytest.raises(JobExists) as exists:
        create(store, job_id, fingerprint="f2")
    assert (exists.value.fingerprint, exists.value.tenant) == ("f1", "a")


def test_forget_idempotency_only_drops_the_key_of_that_job(store: JobStore) -> None:
    job_id = create(store, idempotency_key="k")
    store.forget_idempotency(keys.DEFAULT_TENANT, "k", "someone-else")
    assert store.idempotent_job(keys.DEFAULT_TENANT, "k") is not None
    store.forget_idempotency(keys.DEFAULT_TENANT, "k", job_id)
    assert store.idempotent_job(keys.DEFAULT_TENANT, "k") is None


# -- listing --------------------------------------------------------------------------------
def test_listing_is_newest_first_across_pages(store: JobStore) -> None:
    ids = [create(store) for _ in range(5)]
    assert listed(store) == ids[::-1]


def test_listing_pages_through_equal_scores(store: JobStore) -> None:
    ids = [create(store) for _ in range(5)]
    index = keys.jobs_index(keys.DEFAULT_TENANT)
    for status_key in (index, keys.jobs_index(keys.DEFAULT_TENANT, "queued")):
        store.redis.zadd(status_key, dict.fromkeys(ids, 1_000_000))  # the same microsecond for all
    assert sorted(listed(store)) == sorted(ids) and len(listed(store)) == 5


def test_status_indexes_follow_every_transition(store: JobStore) -> None:
    done, failed, canceled, running, queued = (create(store) for _ in range(5))
    for job_id in (done, failed, running):
        claim(store, job_id)
    store.succeed(done, 1, RESULT)
    store.fail(failed, 1, JobError(code="x", message="y"))
    store.cancel(canceled)
    expected = {Status.SUCCEEDED: [done], Status.FAILED: [failed], Status.CANCELED: [canceled],
                Status.RUNNING: [running], Status.QUEUED: [queued]}
    for status, ids in expected.items():
        assert listed(store, status=status) == ids, status
        assert store.redis.zcard(keys.jobs_index(keys.DEFAULT_TENANT, status.value)) == len(ids)
    assert len(listed(store)) == 5


def test_a_requeued_job_is_listed_as_queued_again(store: JobStore) -> None:
    job_id = create(store)
    attempt = claim(store, job_id)
    assert attempt is not None and store.release(job_id, attempt) is not None
    assert listed(store, status=Status.QUEUED) == [job_id] and listed(store, status=Status.RUNNING) == []


def test_tenants_see_only_their_own_jobs(store: JobStore) -> None:
    mine, theirs = create(store, tenant="a"), create(store, tenant="b")
    assert listed(store, "a") == [mine] and listed(store, "b") == [theirs]


def test_index_entries_go_when_the_record_expires(redis_client: redis.Redis) -> None:
    short = JobStore(redis_client, record_ttl_s=1)
    finished, live = create(short), create(short)
    short.cancel(finished)
    assert set(listed(short)) == {finished, live}
    wait_for(lambda: not redis_client.exists(keys.job(finished)), "the record expired", timeout_s=10)
    wait_for(lambda: listed(short) == [live], "the listing dropped the expired job", timeout_s=10)
    for status in Status:
        assert not redis_client.zscore(keys.jobs_index(keys.DEFAULT_TENANT, status.value), finished)
    assert redis_client.zcard(keys.index_expiry()) == 0


# -- stages ---------------------------------------------------------------------------------
def test_stages_are_stamped_in_order_and_reset_on_requeue(store: JobStore) -> None:
    job_id = create(store)
    job = store.claim_job(job_id)
    assert job is not None and job.record.stage is Stage.LOADING and job.record.loading_at is not None
    assert store.set_stage(job_id, 1, "running") and store.set_stage(job_id, 1, "uploading")
    assert not store.set_stage(job_id, 2, "running")  # fenced like every worker write
    record = store.get(job_id).record  # type: ignore[union-attr]
    assert record.stage is Stage.UPLOADING
    assert record.queued_at <= record.loading_at <= record.running_at <= record.uploading_at  # type: ignore[operator]
    store.release(job_id, 1)
    requeued = store.get(job_id).record  # type: ignore[union-attr]
    assert (requeued.stage, requeued.loading_at, requeued.running_at) == (Stage.QUEUED, None, None)
    assert claim(store, job_id) == 2
    store.succeed(job_id, 2, RESULT)
    assert store.get(job_id).record.stage is Stage.FINISHED  # type: ignore[union-attr]


# -- queue deadlines ------------------------------------------------------------------------
def lapse_queue_deadline(store: JobStore, job_id: str) -> None:
    """Move the deadline into the past (as time passing would), on both the record and the set."""
    store.redis.hset(keys.job(job_id), "queue_deadline", 1)
    store.redis.zadd(keys.queue_deadlines(), {job_id: 1})


def test_a_job_past_its_queue_deadline_is_not_claimed_but_failed(store: JobStore) -> None:
    job_id = create(store, queue_timeout_s=30.0)
    record = store.get(job_id).record  # type: ignore[union-attr]
    assert record.queue_deadline is not None and record.queue_timeout_s == 30.0
    lapse_queue_deadline(store, job_id)
    assert store.claim_job(job_id) is None
    record = store.get(job_id).record  # type: ignore[union-attr]
    assert (record.status, record.attempts) == (Status.FAILED, 0)
    assert record.error is not None and record.error.code == DEADLINE_EXCEEDED
    assert listed(store, status=Status.FAILED) == [job_id]
    assert int(store.redis.ttl(keys.job(job_id))) > 0


def test_a_job_within_its_queue_deadline_is_claimed(store: JobStore) -> None:
    job_id = create(store, queue_timeout_s=30.0)
    assert claim(store, job_id) == 1
    assert store.expire_queued(job_id) is False


def test_the_reaper_fails_queued_jobs_past_their_deadline_and_nothing_else(store: JobStore) -> None:
    late, started, fresh = create(store, queue_timeout_s=30.0), create(store, queue_timeout_s=30.0), create(store)
    claim(store, started)
    for job_id in (late, started):
        lapse_queue_deadline(store, job_id)
    report = Reaper(store, lambda *_: None, max_attempts=3, silence_s=30).run_once()
    assert report.deadline_exceeded == [late]
    statuses = [store.get(j).record.status for j in (late, started, fresh)]  # type: ignore[union-attr]
    assert statuses == [Status.FAILED, Status.RUNNING, Status.QUEUED]
    assert store.redis.zcard(keys.queue_deadlines()) == 0


def test_a_requeued_job_is_not_held_to_its_queue_deadline(store: JobStore) -> None:
    job_id = create(store, queue_timeout_s=30.0)
    claim(store, job_id)
    store.release(job_id, 1)
    lapse_queue_deadline(store, job_id)
    assert claim(store, job_id) == 2  # it did start in time once


# -- webhook outbox -------------------------------------------------------------------------
def outbox_events(store: JobStore) -> list[dict[str, object]]:
    raw = store.redis.hgetall(keys.webhook_events())
    events = [json.loads(v) for v in raw.values()]
    return sorted(events, key=lambda e: int(str(e["id"]).rsplit(".", 1)[1]))


def test_transitions_put_the_asked_for_events_in_the_outbox(store: JobStore) -> None:
    job_id = create(store, webhook_url="http://hooks.example/x", webhook_events=("start", "completed"))
    claim(store, job_id)
    store.progress(job_id, 1, 1, 2)
    store.succeed(job_id, 1, RESULT)
    events = outbox_events(store)
    assert [e["event"] for e in events] == ["start", "completed"]
    assert [e["id"] for e in events] == [f"{job_id}.1", f"{job_id}.2"]
    flat = events[1]["record"]
    assert isinstance(flat, list) and dict(zip(flat[::2], flat[1::2], strict=True))["status"] == "succeeded"
    assert store.redis.zcard(keys.webhook_due()) == 2


def test_progress_events_are_throttled(store: JobStore) -> None:
    job_id = create(store, webhook_url="http://hooks.example/x", webhook_events=("progress",),
                    webhook_progress_s=3600.0)
    claim(store, job_id)
    for step in range(1, 6):
        store.progress(job_id, 1, step, 5)
    assert [e["event"] for e in outbox_events(store)] == ["progress"]


def test_jobs_without_a_webhook_add_nothing(store: JobStore) -> None:
    job_id = create(store)
    claim(store, job_id)
    store.succeed(job_id, 1, RESULT)
    assert store.redis.hlen(keys.webhook_events()) == 0


def test_outbox_claims_with_a_lease_and_retries_keep_the_event_id(store: JobStore) -> None:
    job_id = create(store, webhook_url="http://hooks.example/x", webhook_events=("completed",))
    store.cancel(job_id)
    outbox = Outbox(store.redis)
    (event,) = outbox.claim(10, lease_s=60)
    assert outbox.claim(10, lease_s=60) == []  # leased: no second dispatcher gets it
    outbox.retry(event, delay_s=0)
    (again,) = outbox.claim(10, lease_s=60)
    assert (again.id, again.tries, again.event) == (event.id, 1, "completed")
    outbox.drop(again.id)
    assert outbox.pending() == 0 and store.redis.hlen(keys.webhook_events()) == 0


# -- the family's queued count ----------------------------------------------------------------
def test_the_queued_count_follows_every_move_in_and_out_of_queued(store: JobStore, redis_client: redis.Redis) -> None:
    def count() -> int:
        return int(redis_client.get(keys.queued_count("stable-diffusion")) or 0)

    started, canceled, requeued = create(store), create(store), create(store)
    expired = create(store, queue_timeout_s=0.001)
    assert count() == 4
    assert claim(store, started) == 1 and count() == 3
    assert store.cancel(canceled) == "canceled" and count() == 2
    assert claim(store, requeued) == 1 and count() == 1
    store.release(requeued, 1)  # given back: queued again
    assert count() == 2
    wait_for(lambda: store.expire_queued(expired), "the queue deadline passed", timeout_s=5)
    assert count() == 1
    store.succeed(started, 1, RESULT)
    assert store.cancel(started) == "succeeded" and count() == 1  # moves between other statuses: no change
    assert claim(store, requeued) == 2 and count() == 0


def test_the_routed_count_follows_jobs_routed_to_a_worker_queue_until_they_leave_it(store: JobStore,
                                                                                    redis_client: redis.Redis) -> None:
    queue = worker_queue("a@h")

    def routed_here() -> str:
        job_id = new_job_id()
        store.create(job_id, family="stable-diffusion", pipeline="StableDiffusionPipeline", checkpoint="tiny-sd",
                     revision=None, task=Task.TEXT2IMAGE, spec=job_spec(),
                     message=run_message(job_id, "stable-diffusion", queue=queue))
        return job_id

    def count() -> int:
        return int(redis_client.get(keys.routed_count(queue)) or 0)

    first, second = routed_here(), routed_here()
    create(store)  # to the family queue: not this worker's backlog
    assert count() == 2
    assert store.cancel(first) == "canceled" and count() == 1
    assert claim(store, second) == 1 and count() == 0
    store.release(second, 1)  # given back: its message goes to the family queue, so it no longer counts here
    assert count() == 0 and int(redis_client.get(keys.queued_count("stable-diffusion")) or 0) == 2
    assert claim(store, second) == 2 and count() == 0
