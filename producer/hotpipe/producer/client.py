"""A small synchronous client for the HTTP API, typed with the API's own models.

Errors the API answers are raised as ``APIError`` subclasses by kind (``NotFoundError``,
``ConflictError``, ...), each carrying the API's ``code``, ``message`` and ``field``.
``async_client.AsyncClient`` is the same client for asyncio.
"""

from __future__ import annotations

import base64
import builtins
import mimetypes
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from hotpipe.shared.job import JobList, JobRecord, JobRequest, Upload
from hotpipe.shared.status import TERMINAL

#: read timeout on an event stream: the server sends a keep-alive every 15 s
KEEPALIVE_READ_S = 45.0


class APIError(Exception):
    """An error answer from the API, carrying its status, code, message and field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.field = status, code, message, field


class InvalidRequestError(APIError):
    """400/422: the request was refused; ``field`` names what to fix.  Nothing was enqueued."""


class AuthError(APIError):
    """401/403: no valid API key, or not allowed."""


class NotFoundError(APIError):
    """404: no such job (or its record expired)."""


class ConflictError(APIError):
    """409: the job is already finished, or an Idempotency-Key / job id names another request."""


class TooLargeError(APIError):
    """413: the body (or an upload) is over the server's limit."""


class RateLimitedError(APIError):
    """429: too many requests; retry later."""


class UnavailableError(APIError):
    """5xx: the service or one of its dependencies is down; retry later."""


#: HTTP status -> the exception raised for it (5xx: UnavailableError, other 4xx: APIError)
ERRORS: dict[int, type[APIError]] = {400: InvalidRequestError, 422: InvalidRequestError, 401: AuthError,
                                     403: AuthError, 404: NotFoundError, 409: ConflictError, 413: TooLargeError,
                                     429: RateLimitedError}


def request_body(request: dict[str, Any] | JobRequest) -> dict[str, Any]:
    """The JSON body of a submit, from a plain dict or the API's own request model."""
    if isinstance(request, JobRequest):
        body: dict[str, Any] = request.model_dump(mode="json", exclude_unset=True)
        return body
    return request


def submit_call(request: dict[str, Any] | JobRequest, idempotency_key: str | None,
                job_id: str | None) -> tuple[str, str, dict[str, Any]]:
    """(method, path, keyword arguments) of a submit: POST, or PUT with a chosen id."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    method, path = ("PUT", f"/v1/jobs/{job_id}") if job_id else ("POST", "/v1/jobs")
    return method, path, {"json": request_body(request), "headers": headers}


def list_params(status: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    if cursor:
        params["cursor"] = cursor
    return params


def upload_call(image: Path | bytes, content_type: str | None) -> dict[str, Any]:
    """Keyword arguments of ``POST /v1/uploads`` for a file or raw bytes."""
    data = image.read_bytes() if isinstance(image, Path) else image
    if content_type is None:
        guessed = mimetypes.guess_type(image.name)[0] if isinstance(image, Path) else None
        content_type = guessed or "application/octet-stream"
    return {"content": data, "headers": {"Content-Type": content_type}}


def data_uri(path: Path) -> str:
    """A file as a base64 ``data:`` URI, for ``inputs``."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


class Client:
    """Submit, read, wait for, cancel, list and download jobs; upload inputs."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, api_key: str | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, request: dict[str, Any] | JobRequest, *, idempotency_key: str | None = None,
               job_id: str | None = None) -> JobRecord:
        """Submit a job.  With ``idempotency_key`` or ``job_id`` (a ``PUT`` with your own id),
        sending the same request again returns the same job instead of a second one."""
        method, path, kw = submit_call(request, idempotency_key, job_id)
        return JobRecord.model_validate(self._call(method, path, **kw))

    def list(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> JobList:
        """A page of your jobs, newest first; pass ``next_cursor`` back for the next page."""
        return JobList.model_validate(self._call("GET", "/v1/jobs", params=list_params(status, limit, cursor)))

    def upload(self, image: Path | bytes, content_type: str | None = None) -> Upload:
        """Store an input image; use the returned ``uri`` in a job's ``inputs``."""
        return Upload.model_validate(self._call("POST", "/v1/uploads", **upload_call(image, content_type)))

    def get(self, job_id: str, wait_s: float = 0.0) -> JobRecord:
        params = {"wait": wait_s} if wait_s else None
        return JobRecord.model_validate(self._call("GET", f"/v1/jobs/{job_id}", params=params,
                                                   timeout=wait_s + 30.0))

    def cancel(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate(self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def workers(self) -> builtins.list[dict[str, Any]]:
        """Live workers (``GET /v1/workers``): families, device, hot checkpoints, current job, stats."""
        workers: builtins.list[dict[str, Any]] = self._call("GET", "/v1/workers")["workers"]
        return workers

    def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 20.0) -> JobRecord:
        """The record once terminal (or as it stands after ``timeout_s``).

        Follows the job's event stream; if the stream breaks, falls back to long-polling.
        """
        deadline = time.monotonic() + timeout_s
        try:
            for _, record in self.events(job_id, timeout_s=timeout_s):
                if record.status in TERMINAL:
                    return record
        except httpx.TransportError:
            pass
        record = self.get(job_id, wait_s=min(poll_s, max(deadline - time.monotonic(), 0.0)))
        while record.status not in TERMINAL and (left := deadline - time.monotonic()) > 0:
            record = self.get(job_id, wait_s=min(poll_s, left))
        return record

    def events(self, job_id: str, timeout_s: float = 600.0) -> Iterator[tuple[str, JobRecord]]:
        """(event, record) pairs from ``GET /v1/jobs/{id}/events``: the current state first, then
        every change; ends after a terminal record or when ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        timeout = httpx.Timeout(self.http.timeout.connect, read=KEEPALIVE_READ_S)
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise api_error(response)
            lines: list[str] = []
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                    continue
                event, lines = parse_sse(lines), []
                if event is not None:
                    yield event
                if time.monotonic() > deadline:
                    return

    def download(self, url: str) -> bytes:
        response = httpx.get(url, timeout=60.0)
        response.raise_for_status()
        return response.content

    def _call(self, method: str, path: str, timeout: float | None = None, **kw: Any) -> Any:
        response = self.http.request(method, path, timeout=timeout or self.http.timeout, **kw)
        if response.status_code >= 400:
            raise api_error(response)
        return response.json()


def parse_sse(lines: list[str]) -> tuple[str, JobRecord] | None:
    """(event name, record) from the lines of one server-sent event; None for comments."""
    name, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    if not data:
        return None
    return name, JobRecord.model_validate_json("\n".join(data))


def api_error(response: httpx.Response) -> APIError:
    try:
        err = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        err = {"code": "http_error", "message": response.text[:500]}
    kind = ERRORS.get(response.status_code, UnavailableError if response.status_code >= 500 else APIError)
    return kind(response.status_code, err.get("code", "error"), err.get("message", ""), err.get("field"))
