"""``AsyncClient``: the HTTP API for asyncio code, mirroring ``Client`` method for method.

Typed with the API's own models; errors raised as the same ``APIError`` subclasses.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from hotpipe.producer.client import (
    KEEPALIVE_READ_S,
    api_error,
    list_params,
    parse_sse,
    submit_call,
    upload_call,
)
from hotpipe.shared.job import JobList, JobRecord, JobRequest, Upload
from hotpipe.shared.status import TERMINAL


class AsyncClient:
    """Submit, read, wait for, cancel, list and download jobs; upload inputs — with ``await``."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, api_key: str | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers=headers)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def submit(self, request: dict[str, Any] | JobRequest, *, idempotency_key: str | None = None,
                     job_id: str | None = None) -> JobRecord:
        """Submit a job; the same ``idempotency_key`` or ``job_id`` and body again returns the same job."""
        method, path, kw = submit_call(request, idempotency_key, job_id)
        return JobRecord.model_validate(await self._call(method, path, **kw))

    async def get(self, job_id: str, wait_s: float = 0.0) -> JobRecord:
        params = {"wait": wait_s} if wait_s else None
        return JobRecord.model_validate(await self._call("GET", f"/v1/jobs/{job_id}", params=params,
                                                         timeout=wait_s + 30.0))

    async def cancel(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate(await self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    async def list(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> JobList:
        """A page of your jobs, newest first; pass ``next_cursor`` back for the next page."""
        return JobList.model_validate(await self._call("GET", "/v1/jobs", params=list_params(status, limit, cursor)))

    async def upload(self, image: Path | bytes, content_type: str | None = None) -> Upload:
        """Store an input image; use the returned ``uri`` in a job's ``inputs``."""
        return Upload.model_validate(await self._call("POST", "/v1/uploads", **upload_call(image, content_type)))

    async def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 20.0) -> JobRecord:
        """The record once terminal (or as it stands after ``timeout_s``): over the event stream,
        falling back to long-polling if the stream breaks."""
        deadline = time.monotonic() + timeout_s
        try:
            async for _, record in self.events(job_id, timeout_s=timeout_s):
                if record.status in TERMINAL:
                    return record
        except httpx.TransportError:
            pass
        record = await self.get(job_id, wait_s=min(poll_s, max(deadline - time.monotonic(), 0.0)))
        while record.status not in TERMINAL and (left := deadline - time.monotonic()) > 0:
            record = await self.get(job_id, wait_s=min(poll_s, left))
        return record

    async def events(self, job_id: str, timeout_s: float = 600.0) -> AsyncIterator[tuple[str, JobRecord]]:
        """(event, record) pairs: the current state first, then every change; ends after a
        terminal record or when ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        timeout = httpx.Timeout(self.http.timeout.connect, read=KEEPALIVE_READ_S)
        async with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise api_error(response)
            lines: list[str] = []
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
                    continue
                event, lines = parse_sse(lines), []
                if event is not None:
                    yield event
                if time.monotonic() > deadline:
                    return

    async def download(self, url: str) -> bytes:
        async with httpx.AsyncClient(timeout=60.0) as plain:  # presigned URLs carry their own auth
            response = await plain.get(url)
        response.raise_for_status()
        return response.content

    async def _call(self, method: str, path: str, timeout: float | None = None, **kw: Any) -> Any:
        response = await self.http.request(method, path, timeout=timeout or self.http.timeout, **kw)
        if response.status_code >= 400:
            raise api_error(response)
        return response.json()

