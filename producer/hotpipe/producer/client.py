"""A small synchronous client for the HTTP API, typed with the API's own models.

Errors the API answers are raised as ``APIError`` subclasses by kind (``NotFoundError``,
``ConflictError``, ...), each carrying the API's ``code``, ``message`` and ``field``.
``async_client.AsyncClient`` is the same client for asyncio: both send the calls that
``client_core`` builds and read the answers it decodes.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from hotpipe.producer.client_core import (
    DOWNLOAD_TIMEOUT_S,
    Call,
    EventStream,
    WaitPlan,
    cancel_call,
    data_uri,
    downloaded,
    get_call,
    list_call,
    models_call,
    submit_call,
    upload_call,
    workers_call,
)
from hotpipe.producer.client_errors import (
    APIError,
    AuthError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    TooLargeError,
    UnavailableError,
    api_error,
)
from hotpipe.shared.job import JobList, JobRecord, JobRequest, Upload

__all__ = ["APIError", "AuthError", "Client", "ConflictError", "InvalidRequestError", "NotFoundError",
           "RateLimitedError", "TooLargeError", "UnavailableError", "data_uri"]

T = TypeVar("T")


class Client:
    """Submit, read, wait for, cancel, list and download jobs; upload inputs."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, api_key: str | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, request: dict[str, Any] | JobRequest, *, idempotency_key: str | None = None,
               job_id: str | None = None) -> JobRecord:
        """Submit a job.  With ``idempotency_key`` or ``job_id`` (a ``PUT`` with your own id),
        sending the same request again returns the same job instead of a second one."""
        return self._send(submit_call(request, idempotency_key, job_id))

    def list(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> JobList:
        """A page of your jobs, newest first; pass ``next_cursor`` back for the next page."""
        return self._send(list_call(status, limit, cursor))

    def upload(self, image: Path | bytes, content_type: str | None = None) -> Upload:
        """Store an input image; use the returned ``uri`` in a job's ``inputs``."""
        return self._send(upload_call(image, content_type))

    def get(self, job_id: str, wait_s: float = 0.0) -> JobRecord:
        """The job's record; with ``wait_s``, once terminal or after that many seconds (a long-poll)."""
        return self._send(get_call(job_id, wait_s))

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job now, or ask a running one to stop at its next step."""
        return self._send(cancel_call(job_id))

    def workers(self) -> builtins.list[dict[str, Any]]:
        """Live workers (``GET /v1/workers``): families, device, hot checkpoints, current job, stats."""
        return self._send(workers_call())

    def models(self) -> builtins.list[dict[str, Any]]:
        """The catalog (``GET /v1/models``, every page): checkpoints with family and tasks, ControlNets."""
        models: builtins.list[dict[str, Any]] = []
        after = None
        while True:
            page = self._send(models_call(after=after))
            models += page["data"]
            if not page["has_more"]:
                return models
            after = page["last_id"]

    def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 20.0) -> JobRecord:
        """The record once terminal (or as it stands after ``timeout_s``).

        Follows the job's event stream; if the stream breaks, falls back to long-polling.
        """
        plan = WaitPlan(timeout_s, poll_s)
        try:
            for _, record in self.events(job_id, timeout_s=timeout_s):
                if plan.finished(record):
                    return record
        except httpx.TransportError:
            pass
        record = self.get(job_id, wait_s=plan.first_poll_s())
        while (wait_s := plan.next_poll_s(record)) is not None:
            record = self.get(job_id, wait_s=wait_s)
        return record

    def events(self, job_id: str, timeout_s: float = 600.0) -> Iterator[tuple[str, JobRecord]]:
        """(event, record) pairs from ``GET /v1/jobs/{id}/events``: the current state first, then
        every change; ends after a terminal record or when ``timeout_s`` has passed."""
        stream = EventStream(job_id, timeout_s)
        with self.http.stream("GET", stream.path, timeout=stream.timeout(self.http.timeout)) as response:
            if response.status_code >= 400:
                response.read()
                raise api_error(response)
            for line in response.iter_lines():
                if (event := stream.feed(line)) is not None:
                    yield event
                if stream.ended:
                    return

    def download(self, url: str) -> bytes:
        """The bytes behind a result's (presigned) ``url``."""
        return downloaded(httpx.get(url, timeout=DOWNLOAD_TIMEOUT_S))

    def _send(self, call: Call[T]) -> T:
        response = self.http.request(call.method, call.path, timeout=call.timeout or self.http.timeout, **call.kwargs)
        return call.answer(response)
