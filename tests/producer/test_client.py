"""The SDK: ``Client`` and ``AsyncClient`` are one client (same methods, same requests, same answers).

The wire is httpx's ``MockTransport`` here; tests/e2e run both clients against the real API.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from hotpipe import AsyncClient, Client
from hotpipe.producer.client import APIError, ConflictError, InvalidRequestError, NotFoundError, UnavailableError
from hotpipe.producer.client_core import EventStream, WaitPlan, parse_sse
from hotpipe.shared.job import JobRecord
from hotpipe.shared.status import Status

#: asyncio spells closing ``aclose`` (as httpx does); every other public method has one name
ASYNC_NAMES = {"close": "aclose"}
BASE = "http://api.test"
Handler = Callable[[httpx.Request], httpx.Response]


def record(job_id: str = "j1", status: str = "queued") -> dict[str, Any]:
    return {"id": job_id, "status": status, "family": "stable-diffusion", "pipeline": "StableDiffusionPipeline",
            "checkpoint": "tiny-sd", "task": "text2image", "created_at": "2026-01-01T00:00:00Z"}


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {name: fn for name, fn in vars(cls).items() if callable(fn) and not name.startswith("_")}


def test_async_client_has_every_public_method_of_the_sync_one_with_its_signature() -> None:
    sync, aio = public_methods(Client), public_methods(AsyncClient)
    assert {ASYNC_NAMES.get(name, name) for name in sync} == set(aio)
    for name, fn in sync.items():
        twin = aio[ASYNC_NAMES.get(name, name)]
        assert inspect.iscoroutinefunction(twin) or inspect.isasyncgenfunction(twin), name
        ours, theirs = inspect.signature(fn), inspect.signature(twin)
        assert list(ours.parameters.values()) == list(theirs.parameters.values()), name
        assert ours.return_annotation == theirs.return_annotation.replace("AsyncIterator", "Iterator"), name
    assert inspect.isasyncgenfunction(AsyncClient.events)


def both(handler: Handler, call: Callable[[Any], Any]) -> tuple[Any, Any]:
    """What ``call`` (a method call on either client, awaited for the async one) gives on each client."""
    sync = Client(BASE)
    sync.http = httpx.Client(base_url=BASE, transport=httpx.MockTransport(handler))
    aio = AsyncClient(BASE)
    aio.http = httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(handler))

    async def run_async() -> Any:
        answer = call(aio)
        return await answer if inspect.isawaitable(answer) else answer

    return call(sync), asyncio.run(run_async())


def test_both_clients_send_the_same_requests_and_decode_the_same_answers() -> None:
    seen: list[tuple[str, str, bytes, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), request.content, request.headers.get("Idempotency-Key")))
        if request.url.path == "/v1/workers":
            return httpx.Response(200, json={"workers": [{"name": "w1"}]})
        return httpx.Response(202, json=record("mine"))

    sync, aio = both(handler, lambda c: c.submit({"checkpoint": "tiny-sd"}, idempotency_key="k", job_id="mine"))
    assert sync == aio and sync.id == "mine"
    assert seen[0] == seen[1] == ("PUT", f"{BASE}/v1/jobs/mine", b'{"checkpoint":"tiny-sd"}', "k")
    seen.clear()
    assert both(handler, lambda c: c.workers()) == ([{"name": "w1"}], [{"name": "w1"}])
    assert both(handler, lambda c: c.get("j1", wait_s=2.5))[0].id == "mine"
    assert [s[:2] for s in seen] == [("GET", f"{BASE}/v1/workers")] * 2 + [("GET", f"{BASE}/v1/jobs/j1?wait=2.5")] * 2


@pytest.mark.parametrize(("status", "body", "kind", "code"), [
    (404, {"error": {"code": "not_found", "message": "no job", "field": "id"}}, NotFoundError, "not_found"),
    (409, {"error": {"code": "conflict", "message": "done"}}, ConflictError, "conflict"),
    (422, {"error": {"code": "invalid_request", "message": "x", "field": "limit"}}, InvalidRequestError,
     "invalid_request"),
    (502, "<html>bad gateway</html>", UnavailableError, "http_error"),
])
def test_errors_are_the_same_typed_exception_on_both_clients(status: int, body: Any, kind: type, code: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, **({"text": body} if isinstance(body, str) else {"json": body}))

    def cancel(client: Any) -> Any:
        async def awaited() -> Any:
            with pytest.raises(kind) as err:
                await client.cancel("j1")
            return err.value

        if isinstance(client, AsyncClient):
            return awaited()
        with pytest.raises(kind) as err:
            client.cancel("j1")
        return err.value

    for error in both(handler, cancel):
        assert (error.status, error.code) == (status, code)


def test_wait_falls_back_to_long_polls_when_the_stream_breaks_on_both_clients() -> None:
    polls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            raise httpx.ConnectError("stream refused", request=request)
        polls.append(request.url.params["wait"])
        return httpx.Response(200, json=record(status="succeeded" if len(polls) % 2 == 0 else "running"))

    sync, aio = both(handler, lambda c: c.wait("j1", timeout_s=60, poll_s=5))
    assert sync.status is aio.status is Status.SUCCEEDED
    assert polls == ["5"] * 4, "each long-poll waits poll_s (well before the deadline)"


def test_event_stream_yields_events_skips_comments_and_stops_past_its_deadline() -> None:
    stream = EventStream("j1", timeout_s=60)
    assert stream.path == "/v1/jobs/j1/events"
    fed = [stream.feed(line) for line in (": keep-alive", "", "event: status", f"data: {json.dumps(record())}", "")]
    assert fed[:4] == [None] * 4 and fed[4] is not None and fed[4][0] == "status"
    assert not stream.ended
    stream.deadline = 0.0
    stream.feed("event: progress")
    assert not stream.ended, "only at the end of an event"
    stream.feed("")
    assert stream.ended


def test_an_event_without_data_is_a_comment() -> None:
    assert parse_sse([": ping"]) is None
    name, parsed = parse_sse([f"data: {json.dumps(record())}"]) or ("", None)
    assert name == "message" and parsed is not None and parsed.id == "j1"


def test_wait_plan_polls_at_most_poll_s_until_the_deadline_then_stops() -> None:
    plan = WaitPlan(timeout_s=60, poll_s=20)
    running = JobRecord.model_validate(record(status="running"))
    done = JobRecord.model_validate(record(status="failed"))
    assert plan.first_poll_s() == 20 and plan.next_poll_s(running) == 20
    assert plan.next_poll_s(done) is None and plan.finished(done)
    plan.deadline = 0.0
    assert plan.first_poll_s() == 0.0, "past the deadline: one last read of the record, without waiting"
    assert plan.next_poll_s(running) is None


def test_models_follows_the_catalog_pages_on_both_clients() -> None:
    pages = {None: {"data": [{"id": "a"}, {"id": "b"}], "has_more": True, "last_id": "b"},
             "b": {"data": [{"id": "c"}], "has_more": False, "last_id": "c"}}
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        seen.append(after)
        return httpx.Response(200, json={"object": "list", **pages[after]})

    sync, aio = both(handler, lambda c: c.models())
    assert sync == aio == [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    assert seen == [None, "b", None, "b"]


def test_an_openai_shaped_error_names_its_param_as_the_field() -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "limit is 500", "type": "invalid_request_error",
                                                   "param": "limit", "code": "invalid_request"}})

    with pytest.raises(APIError) as raised:
        both(handler, lambda c: c.models())
    assert (raised.value.status, raised.value.code, raised.value.field) == (400, "invalid_request", "limit")
