"""Job routes: submit, list, read, follow and cancel.

``POST /v1/jobs`` submits (an ``Idempotency-Key`` makes it safe to retry); ``PUT /v1/jobs/{id}``
submits with an id the caller chose (the same body again returns the job, another body is a
409).  ``GET /v1/jobs`` lists the caller's jobs newest first from the store's per-tenant sorted
sets.  ``GET /v1/jobs/{id}`` reads one (``?wait=`` long-polls), ``/events`` streams its changes
and ``/cancel`` cancels it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import Body, FastAPI, Header, Query
from fastapi.responses import Response, StreamingResponse

from hotpipe.producer.auth import ReadingTenant, Tenant
from hotpipe.producer.events import job_events
from hotpipe.producer.metrics import ApiMetrics
from hotpipe.producer.routes.records import found, load, record_response, render
from hotpipe.producer.service import Submitted, Submitter
from hotpipe.shared.errors import Conflict, InvalidRequest
from hotpipe.shared.job import JOB_ID_RE, JobList, JobRecord, JobRequest
from hotpipe.shared.status import Status
from hotpipe.shared.store import AsyncJobReader, Cursor

if TYPE_CHECKING:
    from hotpipe.producer.api import Services

#: header that marks an answer as the replay of an earlier request (same key or id, same body)
REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
CURSOR_RE = re.compile(r"^(?P<score>\d{1,20}):(?P<id>[A-Za-z0-9][A-Za-z0-9_-]{0,63})$")
FINISHED_NOT_CANCELED = frozenset({Status.SUCCEEDED.value, Status.FAILED.value})

#: what /docs and the OpenAPI document show as request bodies (each one a request that works)
JOB_EXAMPLES = {
    "text2image": {"summary": "text to image", "value": {
        "checkpoint": "stabilityai/stable-diffusion-xl-base-1.0", "task": "text2image",
        "params": {"prompt": "a lighthouse at dusk, oil painting", "num_inference_steps": 30, "seed": 7}}},
    "image2image": {"summary": "image to image, from an upload", "value": {
        "checkpoint": "stabilityai/stable-diffusion-xl-base-1.0", "task": "image2image",
        "inputs": {"image": "s3://hotpipe/jobs/_uploads/default/3f1c.png"},
        "params": {"prompt": "the same scene in winter", "strength": 0.6}, "priority": 8}},
    "inpainting": {"summary": "inpainting, with a webhook", "value": {
        "checkpoint": "my-inpainting-model", "task": "inpainting",
        "inputs": {"image": "s3://hotpipe/jobs/_uploads/default/3f1c.png",
                   "mask_image": "s3://hotpipe/jobs/_uploads/default/9a2e.png"},
        "params": {"prompt": "a red door"}, "webhook_url": "https://example.com/hooks/hotpipe"}},
}
JobBody = Annotated[JobRequest, Body(openapi_examples=JOB_EXAMPLES)]

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                             description="Same key and body: the same job (200); other body: 409")]


def check_idempotency_key(key: str | None) -> str | None:
    """The key when it is one we accept; ``InvalidRequest`` naming the header otherwise."""
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
    """The store's cursor from the ``next_cursor`` a page answered; ``InvalidRequest`` for anything else."""
    if cursor is None:
        return None
    m = CURSOR_RE.match(cursor)
    if not m:
        raise InvalidRequest("cursor is not one this API returned; pass next_cursor from the previous page",
                             field="cursor")
    return Cursor(int(m["score"]), m["id"])


def add_job_routes(app: FastAPI, svc: Services, submitter: Submitter, readers: list[AsyncJobReader],
                   metrics: ApiMetrics) -> None:
    """Every ``/v1/jobs`` route; reads wait on ``readers[0]``, the asyncio reader the app's lifespan made."""
    _add_submit_routes(app, svc, submitter, metrics)
    _add_list_route(app, svc)
    _add_read_routes(app, svc, readers)
    _add_cancel_route(app, svc)


def _add_submit_routes(app: FastAPI, svc: Services, submitter: Submitter, metrics: ApiMetrics) -> None:
    def respond(body: JobRequest, submitted: Submitted) -> Response:
        if submitted.created:
            metrics.job_submitted(submitted.record.family, body.priority)
        return submitted_response(lambda r: render(svc, r), submitted)

    @app.post("/v1/jobs", status_code=202, response_model=JobRecord, response_model_exclude_none=True,
              responses={200: {"description": "the job this Idempotency-Key already names (same body)"},
                         409: {"description": "the Idempotency-Key was used with a different body"}})
    def submit_job(body: JobBody, tenant: Tenant, idempotency_key: IdempotencyKey = None) -> Response:
        """Validate and enqueue a generation job; 202 with its record (200 for a replayed Idempotency-Key)."""
        return respond(body, submitter.submit(body, tenant=tenant,
                                              idempotency_key=check_idempotency_key(idempotency_key)))

    @app.put("/v1/jobs/{job_id}", status_code=202, response_model=JobRecord, response_model_exclude_none=True,
             responses={200: {"description": "the job this id already names (same body)"},
                        409: {"description": "the id names a job made from a different body"}})
    def put_job(job_id: str, body: JobBody, tenant: Tenant,
                idempotency_key: IdempotencyKey = None) -> Response:
        """Submit with an id you chose: 202 when created, 200 with the same job when sent again."""
        if not JOB_ID_RE.match(job_id):
            raise InvalidRequest("the job id must be 1-64 letters, digits, '_' or '-', starting with a letter "
                                 "or digit", field="id")
        return respond(body, submitter.submit(body, tenant=tenant, job_id=job_id,
                                              idempotency_key=check_idempotency_key(idempotency_key)))


def _add_list_route(app: FastAPI, svc: Services) -> None:
    max_limit = svc.settings.max_list_limit

    @app.get("/v1/jobs", response_model=JobList, response_model_exclude_none=True)
    def list_jobs(tenant: ReadingTenant, status: Status | None = None,
                  # defaults, not Annotated: the bound is a local, which a string annotation can't name
                  limit: int = Query(20, ge=1, json_schema_extra={"maximum": max_limit}),
                  cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
                  ) -> Response:
        """Your jobs, newest first; ``status`` filters, ``next_cursor`` fetches the next page."""
        if limit > max_limit:
            raise InvalidRequest(f"limit is {limit}; at most {max_limit}", field="limit")
        records, more = svc.store.list_jobs(tenant, status, limit, parse_cursor(cursor))
        jobs = ",".join(render(svc, r) for r in records)
        page = f'{{"jobs":[{jobs}]' + (f',"next_cursor":"{more.encode()}"' if more else "") + "}"
        return Response(page, media_type="application/json")


def _add_read_routes(app: FastAPI, svc: Services, readers: list[AsyncJobReader]) -> None:
    wait_max_s = svc.settings.wait_max_s

    @app.get("/v1/jobs/{job_id}", response_model=JobRecord, response_model_exclude_none=True)
    async def get_job(job_id: str, tenant: ReadingTenant,
                      wait: float = Query(0.0, ge=0, json_schema_extra={"maximum": wait_max_s},
                                          description="seconds to wait for a terminal state"),
                      ) -> Response:
        """The job's record; with ``wait=S``, returns once terminal or after S seconds."""
        if wait > wait_max_s:
            raise InvalidRequest(f"wait is {wait}; at most {wait_max_s} seconds", field="wait")
        reader = readers[0]
        if wait > 0 and JOB_ID_RE.match(job_id):  # one read: the wait's own, checked before it waits
            record = found(job_id, await reader.wait(job_id, wait, admit=lambda r: found(job_id, r, tenant)), tenant)
        else:
            record = found(job_id, await reader.get(job_id) if JOB_ID_RE.match(job_id) else None, tenant)
        return record_response(svc, record)

    @app.get("/v1/jobs/{job_id}/events", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "SSE: `status` and `progress` events, data = the job record"}})
    async def job_events_stream(job_id: str, tenant: ReadingTenant) -> StreamingResponse:
        """Server-Sent Events: the current state first, then every change; ends when terminal."""
        reader = readers[0]
        found(job_id, await reader.get(job_id) if JOB_ID_RE.match(job_id) else None, tenant)
        stream = job_events(reader.redis, job_id, lambda: reader.get(job_id), lambda r: render(svc, r))
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _add_cancel_route(app: FastAPI, svc: Services) -> None:
    @app.post("/v1/jobs/{job_id}/cancel", status_code=202, response_model=JobRecord,
              response_model_exclude_none=True)
    def cancel_job(job_id: str, tenant: Tenant) -> Response:
        """Cancel a queued job now, or ask a running one to stop at its next step."""
        load(svc, job_id, tenant)
        status = svc.store.cancel(job_id)
        if status in FINISHED_NOT_CANCELED:
            raise Conflict(f"job {job_id} already {status}; only queued or running jobs can be canceled",
                           field="status")
        return record_response(svc, load(svc, job_id), status_code=202)
