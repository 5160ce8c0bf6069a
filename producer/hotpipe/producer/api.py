"""The HTTP API: submit, read, wait on and cancel jobs.

Every caller mistake is a JSON ``{"error": {"code", "message", "field"}}`` with a 4xx;
a dependency outage is a 503 with ``Retry-After``; nothing else answers 5xx.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import redis
import redis.asyncio as aioredis
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hotpipe import __version__
from hotpipe.producer.admission import Admission, ReadLimit
from hotpipe.producer.auth import KeyTable, ReadingTenant, Tenant
from hotpipe.producer.events import job_events
from hotpipe.producer.fleet import add_worker_routes, make_router
from hotpipe.producer.lifecycle_routes import (
    IdempotencyKey,
    add_lifecycle_routes,
    check_idempotency_key,
    submitted_response,
)
from hotpipe.producer.metrics import ApiMetrics, install_metrics
from hotpipe.producer.queues import add_queue_routes
from hotpipe.producer.service import Submitter
from hotpipe.producer.webhook_dispatcher import Dispatcher
from hotpipe.shared.errors import (
    Conflict,
    HotpipeError,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from hotpipe.shared.hub_cache import hub_fetch
from hotpipe.shared.job import JOB_ID_RE, JobRecord, JobRequest
from hotpipe.shared.settings import Settings
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import AsyncJobReader, JobStore
from hotpipe.shared.webhook_outbox import Outbox

log = logging.getLogger(__name__)
RETRY_AFTER_S = "2"
REDIS_OPTIONS: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30,
                                 "socket_connect_timeout": 2, "retry_on_timeout": True}
#: where FastAPI says a value came from; our error field names the value itself
LOCATION_PREFIXES = frozenset({"body", "query", "path"})
FINISHED_NOT_CANCELED = frozenset({Status.SUCCEEDED.value, Status.FAILED.value})




@dataclass
class Services:
    """What the API talks to; built once per process from settings."""

    settings: Settings
    redis: redis.Redis
    store: JobStore
    storage: Storage

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        client = redis.Redis.from_url(settings.redis_url, **REDIS_OPTIONS)
        return cls(settings, client, JobStore(client, settings.record_ttl_s), Storage(settings))

    def async_reader(self) -> AsyncJobReader:
        """A reader on an asyncio client; made inside the serving event loop (lifespan)."""
        return AsyncJobReader(aioredis.Redis.from_url(self.settings.redis_url, **REDIS_OPTIONS))


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The API application over ``services`` (built from ``settings`` when not given)."""
    svc = services or Services.from_settings(settings)
    readers: list[AsyncJobReader] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        readers.append(svc.async_reader())
        dispatcher = start_dispatcher(svc)
        yield
        if dispatcher is not None:
            dispatcher.stop()
        await readers.pop().redis.aclose()

    app = FastAPI(title="hotpipe", version=__version__, lifespan=lifespan,
                  description="Run Hugging Face Diffusers checkpoints as a fleet service.")
    app.state.services = svc
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    metrics = install_metrics(app, svc.redis)  # outside BodyLimit: its 413s are counted too
    _install_error_handlers(app)
    app.state.key_table = KeyTable.from_settings(settings)
    app.state.key_table.warn_if_open()
    app.state.read_limit = ReadLimit.from_settings(svc.redis, settings)
    _add_job_routes(app, svc, readers, metrics)
    add_queue_routes(app, svc.redis)
    _add_health_routes(app, svc)
    add_worker_routes(app, svc.redis, settings)
    return app


def start_dispatcher(svc: Services) -> Dispatcher | None:
    """The webhook dispatcher thread of this API process, when configured to run one."""
    if not (svc.settings.webhook_dispatcher and svc.settings.webhook_secret):
        return None
    dispatcher = Dispatcher(Outbox(svc.redis), svc.settings, lambda r: render(svc, r))
    dispatcher.start()
    return dispatcher


def render(svc: Services, record: JobRecord) -> str:
    """The record as JSON, with presigned URLs made on every read so they never go stale."""
    if record.result:
        for image in record.result.images:
            image.url = svc.storage.presign(image.key)
    return record.model_dump_json(exclude_none=True)


def record_response(svc: Services, record: JobRecord, status_code: int = 200) -> Response:
    return Response(render(svc, record), status_code=status_code, media_type="application/json")


def found(job_id: str, record: JobRecord | None, tenant: str | None = None) -> JobRecord:
    # Another tenant's job is "not found", exactly like a job that never existed: its
    # existence is none of the caller's business.
    if record is None or (tenant is not None and record.tenant != tenant):
        raise NotFound(f"no job {job_id!r}; it never existed or its record expired", field="id")
    return record


def load(svc: Services, job_id: str, tenant: str | None = None) -> JobRecord:
    job = svc.store.get(job_id) if JOB_ID_RE.match(job_id) else None
    return found(job_id, job.record if job else None, tenant)


def _add_job_routes(app: FastAPI, svc: Services, readers: list[AsyncJobReader], metrics: ApiMetrics) -> None:
    admission = Admission.from_settings(svc.redis, svc.settings)
    submitter = Submitter(svc.settings, svc.store, svc.storage,
                          hub_fetch(svc.redis, svc.settings.hub_cache_ttl_s), admission=admission,
                          router=make_router(svc.redis, svc.settings))
    wait_max_s = svc.settings.wait_max_s

    @app.post("/v1/jobs", status_code=202, response_model=JobRecord, response_model_exclude_none=True,
              responses={200: {"description": "the job this Idempotency-Key already names (same body)"},
                         409: {"description": "the Idempotency-Key was used with a different body"}})
    def submit_job(body: JobRequest, tenant: Tenant, idempotency_key: IdempotencyKey = None) -> Response:
        """Validate and enqueue a generation job; 202 with its record (200 for a replayed Idempotency-Key)."""
        submitted = submitter.submit(body, tenant=tenant, idempotency_key=check_idempotency_key(idempotency_key))
        if submitted.created:
            metrics.job_submitted(submitted.record.family, body.priority)
        return submitted_response(lambda r: render(svc, r), submitted)

    add_lifecycle_routes(app, svc, submitter, lambda r: render(svc, r),
                         lambda record, body: metrics.job_submitted(record.family, body.priority))

    @app.get("/v1/jobs/{job_id}", response_model=JobRecord, response_model_exclude_none=True)
    async def get_job(job_id: str, tenant: ReadingTenant, wait: Annotated[float, Query(ge=0)] = 0.0) -> Response:
        """The job's record; with ``wait=S``, returns once terminal or after S seconds."""
        if wait > wait_max_s:
            raise InvalidRequest(f"wait is {wait}; at most {wait_max_s} seconds", field="wait")
        reader = readers[0]
        record = found(job_id, await reader.get(job_id) if JOB_ID_RE.match(job_id) else None, tenant)
        if wait > 0 and not record.status.is_terminal():
            record = found(job_id, await reader.wait(job_id, wait), tenant)
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


def _add_health_routes(app: FastAPI, svc: Services) -> None:
    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        """Redis answers; 503 otherwise."""
        svc.redis.ping()
        return {"status": "ready"}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HotpipeError)
    def _hotpipe(_: Request, exc: HotpipeError) -> JSONResponse:
        headers = None
        if isinstance(exc, Unavailable):
            headers = {"Retry-After": RETRY_AFTER_S}
        elif isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after_s)}
        elif isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(exc.to_json(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code)

    @app.exception_handler(redis.RedisError)
    @app.exception_handler(OperationalError)
    def _down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("dependency unavailable: %s", exc)
        err = Unavailable("a backing service (Redis) is unavailable; retry shortly")
        return JSONResponse(err.to_json(), status_code=503, headers={"Retry-After": RETRY_AFTER_S})


def validation_error(errors: Any) -> dict[str, Any]:
    """Pydantic's errors as our JSON error: the first one names the field and the fix."""
    details = []
    for err in errors:
        # a JSON decode error's loc is ("body", character offset): the field at fault is the body
        parts = () if err.get("type") == "json_invalid" else err.get("loc", ())
        loc = [str(p) for p in parts if p not in LOCATION_PREFIXES]
        details.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid"),
                        "type": err.get("type", "")})
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    if first["type"] == "json_invalid":
        message = "the body is not valid JSON"
    elif first["type"] == "missing":
        message = f"{first['field']} is required"
    else:
        message = f"{first['field']}: {first['message']}"
    return {"error": {"code": "invalid_request", "message": message, "field": first["field"], "details": details}}


class BodyLimit:
    """Refuse bodies over ``max_bytes`` (413) before they are read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen, too_large, started = 0, False, False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                too_large = True
                raise _TooLarge
            return message

        async def guarded(message: Message) -> None:
            # FastAPI turns an error raised while reading the body into its own 400; drop
            # that answer so the refusal below is the one the caller gets.
            nonlocal started
            if too_large:
                return
            started = True
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, limited, guarded)
        if too_large and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse({"error": {"code": "body_too_large", "field": "body",
                                           "message": f"request body over {self.max_bytes} bytes"}}, status_code=413)
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
