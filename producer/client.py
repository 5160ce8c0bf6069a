"""A small synchronous client for the HTTP API, typed with the API's own models."""

from __future__ import annotations

import base64
import mimetypes
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from hotpipe.shared.job import JobRecord
from hotpipe.shared.status import TERMINAL

#: read timeout on an event stream: the server sends a keep-alive every 15 s
KEEPALIVE_READ_S = 45.0


class APIError(Exception):
    """An error answer from the API, carrying its status, code, message and field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.field = status, code, message, field


def data_uri(path: Path) -> str:
    """A file as a base64 ``data:`` URI, for ``inputs``."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


class Client:
    """Submit, read, wait for, cancel and download jobs."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, api_key: str | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, request: dict[str, Any]) -> JobRecord:
        return JobRecord.model_validate(self._call("POST", "/v1/jobs", json=request))

    def get(self, job_id: str, wait_s: float = 0.0) -> JobRecord:
        params = {"wait": wait_s} if wait_s else None
        return JobRecord.model_validate(self._call("GET", f"/v1/jobs/{job_id}", params=params,
                                                   timeout=wait_s + 30.0))

    def cancel(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate(self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def workers(self) -> list[dict[str, Any]]:
        """Live workers (``GET /v1/workers``): families, device, hot checkpoints, current job, stats."""
        workers: list[dict[str, Any]] = self._call("GET", "/v1/workers")["workers"]
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
                raise _api_error(response)
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
            raise _api_error(response)
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


def _api_error(response: httpx.Response) -> APIError:
    try:
        err = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        err = {"code": "http_error", "message": response.text[:500]}
    return APIError(response.status_code, err.get("code", "error"), err.get("message", ""), err.get("field"))
