"""Dynamic batching's torch-free half: the compatibility key (a table), the lists scanned and their order,
and taking a job (its message removed and the job claimed in one script) against the real redis-server."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import redis

from hotpipe.shared import batching, keys
from hotpipe.shared.batching import Batcher, compat_key, scan, waiting_lists
from hotpipe.shared.job import LoraChoice, SchedulerChoice, Task, new_job_id
from hotpipe.shared.messages import run_message
from hotpipe.shared.queues import family_queue, priority_step, worker_queue
from hotpipe.shared.spec import JobSpec, LoraSpec
from hotpipe.shared.status import Status
from hotpipe.shared.store import JobOptions, JobStore
from tests.jobs import TINY_SD, claim

PIPE = "StableDiffusionPipeline"
BASE = {"prompt": "a cat", "seed": 1, "num_inference_steps": 4, "height": 64, "width": 64, "guidance_scale": 7.5}
LORA = LoraSpec(**LoraChoice(name="l", scale=0.5, weight_name="w.safetensors").model_dump(), source="local",
                location="/m/l", adapter="a1")


def spec(**changes: Any) -> JobSpec:
    params = {**BASE, **changes.pop("params", {})}
    return JobSpec(resolved=changes.pop("resolved", TINY_SD), task=changes.pop("task", Task.TEXT2IMAGE), params=params,
                   **changes)


#: (what differs from the base job, same key?)
TABLE: list[tuple[str, JobSpec, bool]] = [
    ("another prompt", spec(params={"prompt": "a dog"}), True),
    ("another seed", spec(params={"seed": 99}), True),
    ("more images", spec(params={"num_images": 2}), True),
    ("another priority", spec(priority=9), True),
    ("another output format", spec(output_format="webp"), True),
    ("another timeout", spec(timeout_s=5.0), True),
    ("a negative prompt", spec(params={"negative_prompt": "blurry"}), False),
    ("another height", spec(params={"height": 128}), False),
    ("another width", spec(params={"width": 32}), False),
    ("another step count", spec(params={"num_inference_steps": 5}), False),
    ("another guidance", spec(params={"guidance_scale": 3.0}), False),
    ("a pass-through argument", spec(params={"eta": 0.5}), False),
    ("a scheduler", spec(scheduler=SchedulerChoice(name="EulerDiscreteScheduler")), False),
    ("a LoRA", spec(loras=[LORA]), False),
    ("another checkpoint", spec(resolved=dataclasses.replace(TINY_SD, checkpoint="other", location="other")), False),
    ("another revision", spec(resolved=dataclasses.replace(TINY_SD, revision="abc")), False),
]


@pytest.mark.parametrize(("case", "other", "same"), TABLE, ids=[row[0] for row in TABLE])
def test_compat_key_table(case: str, other: JobSpec, same: bool) -> None:
    assert (compat_key(other, PIPE) == compat_key(spec(), PIPE)) is same, case


def test_negative_prompts_themselves_are_per_image() -> None:
    one = spec(params={"negative_prompt": "blurry"})
    assert compat_key(one, PIPE) == compat_key(spec(params={"negative_prompt": "dark"}), PIPE)


def test_another_class_or_task_never_shares_a_call() -> None:
    assert compat_key(spec(), PIPE) != compat_key(spec(), "StableDiffusionPAGPipeline")
    assert compat_key(spec(), PIPE) != compat_key(spec(task=Task.IMAGE2IMAGE), PIPE)


@pytest.mark.parametrize(("why", "job", "pipeline"), [
    ("input images", spec(task=Task.IMAGE2IMAGE, inputs={"image": "jobs/_uploads/x.png"}), PIPE),
    ("no callback_on_step_end (legacy callback only)", spec(), "IFPipeline"),
    ("an unknown class", spec(), "NoSuchPipeline"),
    ("several images at a size whose latents split unevenly", spec(params={"num_images": 2, "height": 72}), PIPE),
])
def test_jobs_that_run_alone_have_no_key(why: str, job: JobSpec, pipeline: str) -> None:
    assert compat_key(job, pipeline) is None, why


def test_one_image_at_any_size_batches() -> None:
    assert compat_key(spec(params={"height": 72}), PIPE) is not None


def test_the_lists_are_scanned_in_kombus_order() -> None:
    lists = waiting_lists(worker_queue("w1"), ["stable-diffusion"])
    assert lists[:2] == [keys.priority_list(worker_queue("w1"), 0), keys.priority_list("stable-diffusion", 0)]
    assert lists[-1] == keys.priority_list("stable-diffusion", 9) and len(lists) == 20


def queued(store: JobStore, job: JobSpec | None = None, priority: int = 5, queue: str | None = None,
           **options: Any) -> str:
    job = job or spec(priority=priority)
    job_id = new_job_id()
    store.create(job_id, family="stable-diffusion", pipeline=PIPE, checkpoint="tiny-sd", revision=None,
                 task=Task.TEXT2IMAGE, spec=job, message=run_message(job_id, "stable-diffusion", priority, queue),
                 options=JobOptions(**options))
    return job_id


def pop(client: redis.Redis, job_id: str) -> None:
    """What Celery's BRPOP did to the first job's message before its task ran."""
    for c in scan(client, waiting_lists(None, ["stable-diffusion"])):
        if c.job_id == job_id:
            client.lrem(c.list_key, 1, c.payload)


def batcher(client: redis.Redis, max_images: int = 4, **kw: Any) -> Batcher:
    return Batcher.for_worker(client, "w1", ["stable-diffusion"], max_images, 30_000, **kw)


def first_of(store: JobStore, job_id: str) -> Any:
    pop(store.redis, job_id)
    return store.claim_job(job_id, "w1 pid=7")


def test_scan_reads_oldest_first(store: JobStore, redis_client: redis.Redis) -> None:
    ids = [queued(store) for _ in range(3)]
    assert [c.job_id for c in scan(redis_client, waiting_lists(None, ["stable-diffusion"]))] == ids


def test_forming_takes_compatible_jobs_in_priority_order_and_claims_them(store: JobStore,
                                                                         redis_client: redis.Redis) -> None:
    first = queued(store)
    low = queued(store, priority=1)
    other = queued(store, spec(params={"height": 128}), priority=9)
    own = queued(store, queue=worker_queue("w1"))
    urgent = queued(store, priority=9)
    taken = batcher(redis_client, max_images=3).form(first_of(store, first), "w1 pid=7")
    assert [j.record.id for j in taken] == [urgent, own]  # step 0 first; own queue before the family's
    for job in taken:
        assert job.record.status is Status.RUNNING and job.record.attempts == 1 and job.worker == "w1 pid=7"
        assert redis_client.zscore(keys.leases(), job.record.id) is not None
    assert store.get(low).record.status is Status.QUEUED  # type: ignore[union-attr]  # no room left
    assert store.get(other).record.status is Status.QUEUED  # type: ignore[union-attr]
    left = {c.job_id for c in scan(redis_client, waiting_lists(worker_queue("w1"), ["stable-diffusion"]))}
    assert left == {low, other}  # the taken messages left their lists: queue depth counts jobs


def test_a_message_already_gone_is_skipped(store: JobStore, redis_client: redis.Redis) -> None:
    first, second = queued(store), queued(store)
    job = first_of(store, first)
    b = batcher(redis_client)
    candidates = scan(redis_client, b.lists)
    pop(redis_client, second)  # another worker's BRPOP got there first
    assert b._take_all(candidates, "w1 pid=7") == []
    assert store.get(second).record.status is Status.QUEUED  # type: ignore[union-attr]
    assert job is not None


def test_a_job_no_longer_queued_keeps_its_message(store: JobStore, redis_client: redis.Redis) -> None:
    first, second = queued(store), queued(store)
    job = first_of(store, first)
    candidates = scan(redis_client, batcher(redis_client).lists)
    assert claim(store, second, "elsewhere pid=1") == 1  # e.g. a duplicate message of a claimed job
    assert batcher(redis_client)._take_all(candidates, "w1 pid=7") == []
    assert store.get(second).worker == "elsewhere pid=1"  # type: ignore[union-attr]
    assert job is not None


def test_a_job_past_its_queue_deadline_is_left_to_the_claim_that_fails_it(store: JobStore,
                                                                           redis_client: redis.Redis) -> None:
    first = queued(store)
    late = queued(store, queue_timeout_s=0.001)
    redis_client.hset(keys.job(late), "queue_deadline", "1")  # long past
    assert batcher(redis_client).form(first_of(store, first), "w1 pid=7") == []
    assert store.get(late).record.status is Status.QUEUED  # type: ignore[union-attr]


def test_duplicate_messages_and_the_first_job_itself_are_not_taken_twice(store: JobStore,
                                                                          redis_client: redis.Redis) -> None:
    first, second = queued(store), queued(store)
    redis_client.lpush(*dataclasses.astuple(run_message(second, "stable-diffusion")))  # a requeue's duplicate
    redis_client.lpush(*dataclasses.astuple(run_message(first, "stable-diffusion")))
    taken = batcher(redis_client).form(first_of(store, first), "w1 pid=7")
    assert [j.record.id for j in taken] == [second]


def test_a_full_first_job_or_one_without_a_key_scans_nothing(store: JobStore, redis_client: redis.Redis) -> None:
    big = queued(store, spec(params={"num_images": 4}))
    queued(store)
    assert batcher(redis_client).form(first_of(store, big), "w1 pid=7") == []
    alone = queued(store, spec(task=Task.IMAGE2IMAGE, inputs={"image": "k"}))
    assert batcher(redis_client).form(first_of(store, alone), "w1 pid=7") == []


def test_batch_wait_takes_what_arrived_meanwhile(store: JobStore, redis_client: redis.Redis,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    first = queued(store)
    arrived: list[str] = []
    monkeypatch.setattr(batching.time, "sleep", lambda s: arrived.append(queued(store)))
    taken = batcher(redis_client, wait_ms=50).form(first_of(store, first), "w1 pid=7")
    assert [j.record.id for j in taken] == arrived and len(arrived) == 1


def test_without_wait_nothing_is_waited_for(store: JobStore, redis_client: redis.Redis,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first = queued(store)
    monkeypatch.setattr(batching.time, "sleep", lambda s: pytest.fail("waited with batch_wait_ms 0"))
    assert batcher(redis_client).form(first_of(store, first), "w1 pid=7") == []


def test_the_family_queue_name_is_the_lists_base() -> None:
    assert keys.priority_list(family_queue("stable-diffusion"), priority_step(5)).startswith("stable-diffusion")


def test_compatible_jobs_behind_a_backlog_of_others_are_found(store: JobStore, redis_client: redis.Redis) -> None:
    first = queued(store)
    for _ in range(batching.READ_CHUNK + 5):  # more than one chunk of specs to read past
        queued(store, spec(params={"height": 128}))
    behind = [queued(store) for _ in range(3)]
    taken = batcher(redis_client).form(first_of(store, first), "w1 pid=7")
    assert [j.record.id for j in taken] == behind
