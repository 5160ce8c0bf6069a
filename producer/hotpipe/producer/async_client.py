"""``AsyncClient``: the HTTP API for asyncio code, method for method the same as ``Client``.

Both send the calls that ``client_core`` builds and read the answers it decodes, so requests,
errors (the same ``APIError`` subclasses), ``wait`` and ``events`` behave alike.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from hotpipe.producer.client_core import (
    DOWNLOAD_TIMEOUT_S,
    Call,
    EventStream,
    WaitPlan,
    cancel_call,
    downloaded,
    get_call,
    list_call,
    models_call,
    submit_call,
    upload_call,
    workers_call,
)
from hotpipe.producer.client_errors import api_error
from hotpipe.shared.job import JobList, JobRecord, JobRequest, Upload

T = TypeVar("T")


class AsyncClient:
    """Submit, read, wait for, cancel, list and download jobs; upload inputs — with ``await``."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, api_key: str | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers=headers)

    async def aclose(self) -> None:
        """Close the connections (``Client.close``, asyncio's spelling)."""
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def submit(self, request: dict[str, Any] | JobRequest, *, idempotency_key: str | None = None,
                     job_id: str | None = None) -> JobRecord:
        """Submit a job.  With ``idempotency_key`` or ``job_id`` (a ``PUT`` with your own id),
        sending the same request again returns the same job instead of a second one."""
        return await self._send(submit_call(request, idempotency_key, job_id))

    async def list(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> JobList:
        """A page of your jobs, newest first; pass ``next_cursor`` back for the next page."""
        return await self._send(list_call(status, limit, cursor))

    async def upload(self, image: Path | bytes, content_type: str | None = None) -> Upload:
        """Store an input image; use the returned ``uri`` in a job's ``inputs``."""
        return await self._send(upload_call(image, content_type))

    async def get(self, job_id: str, wait_s: float = 0.0) -> JobRecord:
        """The job's record; with ``wait_s``, once terminal or after that many seconds (a long-poll)."""
        return await self._send(get_call(job_id, wait_s))

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job now, or ask a running one to stop at its next step."""
        return await self._send(cancel_call(job_id))

    async def workers(self) -> builtins.list[dict[str, Any]]:
        """Live workers (``GET /v1/workers``): families, device, hot checkpoints, current job, stats."""
        return await self._send(workers_call())

    async def models(self) -> builtins.list[dict[str, Any]]:
        """The catalog (``GET /v1/models``, every page): checkpoints with family and tasks, ControlNets."""
        models: builtins.list[dict[str, Any]] = []
        after = None
        while True:
            page = await self._send(models_call(after=after))
            models += page["data"]
            if not page["has_more"]:
                return models
            after = page["last_id"]

    async def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 20.0) -> JobRecord:
        """The record once terminal (or as it stands after ``timeout_s``).

        Follows the job's event stream; if the stream breaks, falls back to long-polling.
        """
        plan = WaitPlan(timeout_s, poll_s)
        try:
            async for _, record in self.events(job_id, timeout_s=timeout_s):
                if plan.finished(record):
                    return record
        except httpx.TransportError:
            pass
        record = await self.get(job_id, wait_s=plan.first_poll_s())
        while (wait_s := plan.next_poll_s(record)) is not None:
            record = await self.get(job_id, wait_s=wait_s)
        return record

    async def events(self, job_id: str, timeout_s: float = 600.0) -> AsyncIterator[tuple[str, JobRecord]]:
        """(event, record) pairs from ``GET /v1/jobs/{id}/events``: the current state first, then
        every change; ends after a terminal record or when ``timeout_s`` has passed."""
        stream = EventStream(job_id, timeout_s)
        async with self.http.stream("GET", stream.path, timeout=stream.timeout(self.http.timeout)) as response:
            if response.status_code >= 400:
                await response.aread()
                raise api_error(response)
            async for line in response.aiter_lines():
                if (event := stream.feed(line)) is not None:
                    yield event
                if stream.ended:
                    return

    async def download(self, url: str) -> bytes:
        """The bytes behind a result's (presigned) ``url``."""
        async with httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT_S) as plain:  # presigned URLs carry their own auth
            return downloaded(await plain.get(url))

    async def _send(self, call: Call[T]) -> T:
        response = await self.http.request(call.method, call.path, timeout=call.timeout or self.http.timeout,
                                           **call.kwargs)
        return call.answer(response)
