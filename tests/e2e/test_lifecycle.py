"""End to end over HTTP, through the real stack: idempotency, listing, stages, deadlines,
webhooks, uploads, the async SDK and the CLI's job commands."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from hotpipe import AsyncClient, Client
from hotpipe.devstack import LocalStack
from hotpipe.producer.client import ConflictError, InvalidRequestError, NotFoundError
from hotpipe.shared.job import JobRecord, Stage
from hotpipe.shared.status import Status
from hotpipe.shared.webhooks import verify
from tests.conftest import STACK_WEBHOOK_SECRET
from tests.e2e.polling import wait_for
from tests.e2e.test_jobs import t2i
from tests.receiver import Receiver, receiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[Client]:
    with Client(stack.api_url) as c:
        yield c


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def slow(seed: int) -> dict[str, Any]:
    """A job that runs long enough to be seen running (stopped by the test)."""
    return t2i(seed=seed, num_inference_steps=150, height=256, width=256)


def running(client: Client, job_id: str) -> JobRecord:
    return wait_for(lambda: (r := client.get(job_id)).status is Status.RUNNING and r.progress and r,
                    f"job {job_id} running")


def test_an_idempotent_retry_gets_the_same_job_run_once(client: Client) -> None:
    key = uuid.uuid4().hex
    first = client.submit(t2i(seed=61), idempotency_key=key)
    again = client.submit(t2i(seed=61), idempotency_key=key)
    assert again.id == first.id
    with pytest.raises(ConflictError) as conflict:
        client.submit(t2i(seed=62), idempotency_key=key)
    assert (conflict.value.status, conflict.value.code) == (409, "idempotency_conflict")
    done = client.wait(first.id, timeout_s=120)
    assert (done.status, done.attempts) == (Status.SUCCEEDED, 1)
    assert [r.id for r in client.list(limit=100).jobs].count(first.id) == 1


def test_put_with_a_chosen_id(client: Client) -> None:
    job_id = f"order-{uuid.uuid4().hex[:12]}"
    record = client.submit(t2i(seed=63), job_id=job_id)
    assert record.id == job_id and client.submit(t2i(seed=63), job_id=job_id).id == job_id
    assert client.wait(job_id, timeout_s=120).status is Status.SUCCEEDED


def test_listing_newest_first_with_status_and_stages(client: Client) -> None:
    ids = [client.submit(t2i(seed=70 + i)).id for i in range(3)]
    records = [client.wait(i, timeout_s=120) for i in ids]
    page = client.list(status="succeeded", limit=3)
    assert [r.id for r in page.jobs] == ids[::-1] and page.next_cursor
    rest = client.list(status="succeeded", limit=100, cursor=page.next_cursor)
    assert not set(ids) & {r.id for r in rest.jobs}
    for rec in records:  # queue wait and load time are readable per job
        assert rec.stage is Stage.FINISHED
        stamps = [rec.queued_at, rec.loading_at, rec.running_at, rec.uploading_at, rec.finished_at]
        assert all(stamps) and stamps == sorted(stamps)  # type: ignore[type-var]


def test_a_job_that_cannot_start_in_time_ends_deadline_exceeded(client: Client) -> None:
    blocker = client.submit(slow(64))
    running(client, blocker.id)
    late = client.submit({**t2i(seed=65), "queue_timeout_s": 0.5})
    try:  # the only worker is busy with the blocker, so the reaper is what ends the late job
        done = wait_for(lambda: (r := client.get(late.id)).status.is_terminal() and r, "the late job ended")
        assert client.get(blocker.id).status is Status.RUNNING
    finally:
        client.cancel(blocker.id)
    assert (done.status, done.attempts, done.started_at) == (Status.FAILED, 0, None)
    assert done.error is not None and done.error.code == "deadline_exceeded"
    assert client.get(blocker.id, wait_s=30).status is Status.CANCELED


def test_a_job_past_its_timeout_is_stopped_and_fails(client: Client, stack: LocalStack) -> None:
    record = client.submit({**slow(66), "timeout_s": 1.0})
    done = client.wait(record.id, timeout_s=120)
    assert done.status is Status.FAILED and done.error is not None and done.error.code == "timeout"
    assert done.progress is None or done.progress.step < 150
    assert not stack.storage().exists(f"jobs/{record.id}/0.png")


def test_webhooks_are_signed_retried_and_carry_the_record(client: Client, hook: Receiver) -> None:
    hook.answer = lambda h: 500 if h["hotpipe-event"] == "completed" and len(hook.of("completed")) < 2 else 200
    record = client.submit({**t2i(seed=67, num_inference_steps=3), "webhook_url": hook.url})
    assert client.wait(record.id, timeout_s=120).status is Status.SUCCEEDED
    wait_for(lambda: any(d.status == 200 for d in hook.of("completed")), "the completed webhook got through")
    completed = hook.of("completed")
    assert [d.status for d in completed] == [500, 500, 200]
    assert len({d.headers["hotpipe-event-id"] for d in completed}) == 1  # the same event, retried
    assert all(verify(STACK_WEBHOOK_SECRET, d.headers, d.body) for d in hook.deliveries)
    final = json.loads(completed[-1].body)
    assert (final["id"], final["status"]) == (record.id, "succeeded") and final["result"]["images"][0]["url"]
    assert [json.loads(d.body)["status"] for d in hook.of("start")] == ["running"]
    assert hook.of("progress")  # asked for by default, throttled by HOTPIPE_WEBHOOK_PROGRESS_INTERVAL_S


def test_only_the_asked_for_webhook_events_are_sent(client: Client, hook: Receiver) -> None:
    record = client.submit({**t2i(seed=68), "webhook_url": hook.url, "webhook_events": ["completed"]})
    client.wait(record.id, timeout_s=120)
    wait_for(lambda: hook.of("completed"), "completed webhook")
    assert {d.headers["hotpipe-event"] for d in hook.deliveries} == {"completed"}


def test_upload_then_use_it_as_an_input(client: Client) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(buf, format="PNG")
    upload = client.upload(buf.getvalue(), "image/png")
    assert upload.uri.startswith("s3://hotpipe/jobs/_uploads/")
    record = client.submit({"checkpoint": "tiny-sd", "task": "image2image", "inputs": {"image": upload.uri},
                            "params": {"prompt": "x", "num_inference_steps": 4, "strength": 0.5, "seed": 1}})
    done = client.wait(record.id, timeout_s=120)
    assert done.status is Status.SUCCEEDED and done.result and done.result.images[0].width == 64
    with pytest.raises(InvalidRequestError) as bad:
        client.upload(b"GIF89a not really", "image/gif")
    assert bad.value.field == "body"


def test_async_client_mirrors_the_sync_one(stack: LocalStack) -> None:
    async def main() -> None:
        async with AsyncClient(stack.api_url) as client:
            jobs = [await client.submit(t2i(seed=80 + i)) for i in range(2)]
            events = [name async for name, _ in client.events(jobs[0].id)]
            assert events[0] == "status" and "progress" in events
            done = await asyncio.gather(*(client.wait(j.id, timeout_s=120) for j in jobs))
            assert [r.status for r in done] == [Status.SUCCEEDED] * 2
            assert (await client.download(done[0].result.images[0].url or "")).startswith(b"\x89PNG")  # type: ignore[union-attr]
            assert {j.id for j in jobs} <= {r.id for r in (await client.list(limit=50)).jobs}
            again = await client.submit(t2i(seed=80), idempotency_key=f"a-{jobs[0].id}")
            assert (await client.submit(t2i(seed=80), idempotency_key=f"a-{jobs[0].id}")).id == again.id
            with pytest.raises(ConflictError) as conflict:
                await client.cancel(jobs[0].id)
            assert conflict.value.code == "conflict"
            with pytest.raises(NotFoundError):
                await client.get("no-such-job")
            up = await client.upload(_png(), "image/png")
            assert up.width == 16
            await client.cancel(again.id)
    asyncio.run(main())


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buf, format="PNG")
    return buf.getvalue()


def hotpipe(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotpipe", *argv], capture_output=True, text=True, timeout=120)


def test_cli_jobs_lists_newest_first(stack: LocalStack, client: Client) -> None:
    record = client.wait(client.submit(t2i(seed=90)).id, timeout_s=120)
    table = hotpipe("jobs", "--api", stack.api_url, "--limit", "5")
    assert table.returncode == 0, table.stderr
    first_row = table.stdout.splitlines()[1]
    assert first_row.split()[:3] == [record.id, "succeeded", "finished"]
    lines = hotpipe("jobs", "--api", stack.api_url, "--status", "succeeded", "--limit", "2", "--json").stdout
    rows = [json.loads(line) for line in lines.splitlines()]
    assert rows[0]["id"] == record.id and len(rows) == 2 and {r["status"] for r in rows} == {"succeeded"}
    bad = hotpipe("jobs", "--api", stack.api_url, "--cursor", "garbage")
    assert bad.returncode == 2 and "field cursor" in bad.stderr
