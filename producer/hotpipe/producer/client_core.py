"""The SDK without I/O: what ``Client`` and ``AsyncClient`` send, and how they read the answers.

Each API call is a ``Call``: method, path, httpx arguments and the decoder of its JSON answer.
The two clients only send it (one with ``await``) and hand the response back to ``Call.answer``.
Following a job is two small state machines: ``EventStream`` reads the lines of its event stream,
``WaitPlan`` says how long each long-poll of ``wait`` may take once the stream broke.
"""

from __future__ import annotations

import base64
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from hotpipe.producer.client_errors import api_error
from hotpipe.shared.job import JobList, JobRecord, JobRequest, Upload
from hotpipe.shared.status import TERMINAL

#: read timeout on an event stream: the server sends a keep-alive every 15 s
KEEPALIVE_READ_S = 45.0
#: seconds for a download (presigned URLs carry their own auth: no API key, no base URL)
DOWNLOAD_TIMEOUT_S = 60.0
#: added to a long-poll's ``wait`` for the read timeout, so the server answers before the client gives up
WAIT_MARGIN_S = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and the decoder of its JSON answer."""

    method: str
    path: str
    decode: Callable[[Any], T]
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: seconds; None: the client's own timeout
    timeout: float | None = None

    def answer(self, response: httpx.Response) -> T:
        """The decoded answer; the ``APIError`` subclass for its status when it is an error."""
        if response.status_code >= 400:
            raise api_error(response)
        return self.decode(response.json())


def request_body(request: dict[str, Any] | JobRequest) -> dict[str, Any]:
    """The JSON body of a submit, from a plain dict or the API's own request model."""
    if isinstance(request, JobRequest):
        body: dict[str, Any] = request.model_dump(mode="json", exclude_unset=True)
        return body
    return request


def submit_call(request: dict[str, Any] | JobRequest, idempotency_key: str | None,
                job_id: str | None) -> Call[JobRecord]:
    """A submit: ``POST /v1/jobs``, or ``PUT /v1/jobs/{job_id}`` with a chosen id."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    method, path = ("PUT", f"/v1/jobs/{job_id}") if job_id else ("POST", "/v1/jobs")
    return Call(method, path, JobRecord.model_validate, {"json": request_body(request), "headers": headers})


def list_call(status: str | None, limit: int, cursor: str | None) -> Call[JobList]:
    """``GET /v1/jobs``: a page of the caller's jobs."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    if cursor:
        params["cursor"] = cursor
    return Call("GET", "/v1/jobs", JobList.model_validate, {"params": params})


def upload_call(image: Path | bytes, content_type: str | None) -> Call[Upload]:
    """``POST /v1/uploads`` of a file or raw bytes; the type guessed from a file's name when not given."""
    data = image.read_bytes() if isinstance(image, Path) else image
    if content_type is None:
        guessed = mimetypes.guess_type(image.name)[0] if isinstance(image, Path) else None
        content_type = guessed or "application/octet-stream"
    return Call("POST", "/v1/uploads", Upload.model_validate,
                {"content": data, "headers": {"Content-Type": content_type}})


def get_call(job_id: str, wait_s: float) -> Call[JobRecord]:
    """``GET /v1/jobs/{job_id}``, a long-poll of up to ``wait_s`` seconds when it is not 0."""
    params = {"wait": wait_s} if wait_s else None
    return Call("GET", f"/v1/jobs/{job_id}", JobRecord.model_validate, {"params": params},
                timeout=wait_s + WAIT_MARGIN_S)


def cancel_call(job_id: str) -> Call[JobRecord]:
    """``POST /v1/jobs/{job_id}/cancel``."""
    return Call("POST", f"/v1/jobs/{job_id}/cancel", JobRecord.model_validate)


def _workers(body: Any) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = body["workers"]
    return workers


def workers_call() -> Call[list[dict[str, Any]]]:
    """``GET /v1/workers``: the live workers' records."""
    return Call("GET", "/v1/workers", _workers)


def _page(body: Any) -> dict[str, Any]:
    page: dict[str, Any] = body
    return page


def models_call(limit: int = 100, after: str | None = None) -> Call[dict[str, Any]]:
    """``GET /v1/models``: one page of the catalog (``data``, ``has_more``, ``last_id``)."""
    params: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
    return Call("GET", "/v1/models", _page, {"params": params})


def downloaded(response: httpx.Response) -> bytes:
    """The bytes of a download; httpx's ``HTTPStatusError`` when it failed."""
    response.raise_for_status()
    return response.content


def data_uri(path: Path) -> str:
    """A file as a base64 ``data:`` URI, for ``inputs``."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


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


class EventStream:
    """``GET /v1/jobs/{id}/events`` without the I/O: where to ask, then fed the answer line by line.

    A blank line ends an event; at each one past the deadline the reader stops (the server
    keeps a stream open until the job ends, sending keep-alives meanwhile).
    """

    def __init__(self, job_id: str, timeout_s: float):
        self.path = f"/v1/jobs/{job_id}/events"
        self.deadline = time.monotonic() + timeout_s
        self.lines: list[str] = []
        self.at_boundary = False

    @staticmethod
    def timeout(client_timeout: httpx.Timeout) -> httpx.Timeout:
        """The client's connect timeout, and a read timeout that outlasts the server's keep-alive interval."""
        return httpx.Timeout(client_timeout.connect, read=KEEPALIVE_READ_S)

    def feed(self, line: str) -> tuple[str, JobRecord] | None:
        """The (event, record) this line completes, if any."""
        self.at_boundary = not line
        if line:
            self.lines.append(line)
            return None
        event, self.lines = parse_sse(self.lines), []
        return event

    @property
    def ended(self) -> bool:
        """At the end of an event, past the deadline: stop reading."""
        return self.at_boundary and time.monotonic() > self.deadline


class WaitPlan:
    """``wait`` without the I/O: the event stream first; if it breaks, long-polls until terminal or the deadline."""

    def __init__(self, timeout_s: float, poll_s: float):
        self.deadline = time.monotonic() + timeout_s
        self.poll_s = poll_s

    @staticmethod
    def finished(record: JobRecord) -> bool:
        """The record is terminal: the answer."""
        return record.status in TERMINAL

    def first_poll_s(self) -> float:
        """The ``wait`` of the first long-poll: asked even when the deadline has passed, for the latest record."""
        return min(self.poll_s, max(self.deadline - time.monotonic(), 0.0))

    def next_poll_s(self, record: JobRecord) -> float | None:
        """The ``wait`` of the next long-poll after ``record``; None when ``record`` is the answer."""
        if self.finished(record):
            return None
        left = self.deadline - time.monotonic()
        return min(self.poll_s, left) if left > 0 else None
