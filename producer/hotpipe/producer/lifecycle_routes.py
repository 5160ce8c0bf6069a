"""Routes beyond submit/read/cancel: client-chosen ids, listing, and input uploads.

``PUT /v1/jobs/{id}`` submits with an id the caller chose (idempotent: the same body again
returns the job, another body is a 409).  ``GET /v1/jobs`` lists the caller's jobs newest
first from the store's per-tenant sorted sets.  ``POST /v1/uploads`` stores an input image
and returns the ``s3://`` reference to put in ``inputs``.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from hotpipe.producer.auth import ReadingTenant, Tenant
from hotpipe.producer.service import Submitted, Submitter
from hotpipe.shared.errors import InvalidRequest, TooLarge
from hotpipe.shared.images import check_image
from hotpipe.shared.job import JOB_ID_RE, JobList, JobRecord, JobRequest, Upload
from hotpipe.shared.status import Status
from hotpipe.shared.store import Cursor

if TYPE_CHECKING:
    from hotpipe.producer.api import Services

#: header that marks an answer as the replay of an earlier request (same key or id, same body)
REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
CURSOR_RE = re.compile(r"^(?P<score>\d{1,20}):(?P<id>[A-Za-z0-9][A-Za-z0-9_-]{0,63})$")

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                             description="Same key and body: the same job (200); other body: 409")]


def check_idempotency_key(key: str | None) -> str | None:
    if key is not None and not IDEMPOTENCY_KEY_RE.match(key):
        raise InvalidRequest("Idempotency-Key must be 1-255 printable ASCII characters without spaces "
                             "(a UUID is a good choice)", field="Idempotency-Key")
    return key


def submitted_response(render: Callable[[JobRecord], str], submitted: Submitted) -> Response:
    """202 for a new job; 200 and ``Idempotent-Replayed: true`` for the job an earlier request created."""
    headers = {} if submitted.created else {REPLAYED_HEADER: "true"}
    return Response(render(submitted.record), status_code=202 if submitted.created else 200, headers=headers,
                    media_type="application/json")


def parse_cursor(cursor: str | None) -> Cursor | None:
    if cursor is None:
        return None
    m = CURSOR_RE.match(cursor)
    if not m:
        raise InvalidRequest("cursor is not one this API returned; pass next_cursor from the previous page",
                             field="cursor")
    return Cursor(int(m["score"]), m["id"])


def add_lifecycle_routes(app: FastAPI, svc: Services, submitter: Submitter,
                         render: Callable[[JobRecord], str],
                         on_created: Callable[[JobRecord, JobRequest], None] = lambda record, body: None) -> None:
    max_limit = svc.settings.max_list_limit

    @app.put("/v1/jobs/{job_id}", status_code=202, response_model=JobRecord, response_model_exclude_none=True,
             responses={200: {"description": "the job this id already names (same body)"},
                        409: {"description": "the id names a job made from a different body"}})
    def put_job(job_id: str, body: JobRequest, tenant: Tenant,
                idempotency_key: IdempotencyKey = None) -> Response:
        """Submit with an id you chose: 202 when created, 200 with the same job when sent again."""
        if not JOB_ID_RE.match(job_id):
            raise InvalidRequest("the job id must be 1-64 letters, digits, '_' or '-', starting with a letter "
                                 "or digit", field="id")
        submitted = submitter.submit(body, tenant=tenant, job_id=job_id,
                                     idempotency_key=check_idempotency_key(idempotency_key))
        if submitted.created:
            on_created(submitted.record, body)
        return submitted_response(render, submitted)

    @app.get("/v1/jobs", response_model=JobList, response_model_exclude_none=True)
    def list_jobs(tenant: ReadingTenant, status: Status | None = None,
                  limit: Annotated[int, Query(ge=1)] = 20, cursor: str | None = None) -> Response:
        """Your jobs, newest first; ``status`` filters, ``next_cursor`` fetches the next page."""
        if limit > max_limit:
            raise InvalidRequest(f"limit is {limit}; at most {max_limit}", field="limit")
        records, more = svc.store.list_jobs(tenant, status, limit, parse_cursor(cursor))
        jobs = ",".join(render(r) for r in records)
        page = f'{{"jobs":[{jobs}]' + (f',"next_cursor":"{more.encode()}"' if more else "") + "}"
        return Response(page, media_type="application/json")

    binary = {"schema": {"type": "string", "format": "binary"}}
    body = {"required": True, "content": {f"image/{ext}": binary for ext in ("png", "jpeg", "webp")}}

    @app.post("/v1/uploads", status_code=201, response_model=Upload, openapi_extra={"requestBody": body})
    async def upload(request: Request, tenant: Tenant) -> Upload:
        """Store an input image (the raw body: PNG, JPEG or WebP); use the returned ``uri`` in ``inputs``."""
        data = await read_limited(request, svc.settings.max_input_bytes)
        if not data:
            raise InvalidRequest("the body is empty; send the image bytes as the body", field="body")
        image = check_image(data, "body", svc.settings.max_input_bytes, svc.settings.max_input_pixels)
        key = svc.storage.upload_key(tenant, uuid.uuid4().hex, image.ext)
        await run_in_threadpool(svc.storage.put, key, image.data, image.content_type)
        return Upload(uri=svc.storage.uri(key), key=key, width=image.width, height=image.height,
                      content_type=image.content_type, size=len(data), sha256=hashlib.sha256(data).hexdigest())


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the upload is {declared} bytes; at most {limit}", field="body")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise TooLarge(f"the upload is over {limit} bytes", field="body")
    return bytes(data)
