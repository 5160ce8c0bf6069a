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
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hotpipe import __version__
from hotpipe.producer.admission import Admission, ReadLimit
from hotpipe.producer.auth import KeyTable
from hotpipe.producer.fleet import make_router
from hotpipe.producer.metrics import install_metrics
from hotpipe.producer.openai_compat import OpenAIError, error_body, is_openai_path
from hotpipe.producer.openapi import install_openapi
from hotpipe.producer.routes.health import add_health_routes
from hotpipe.producer.routes.jobs import add_job_routes
from hotpipe.producer.routes.models import add_model_routes
from hotpipe.producer.routes.openai_images import add_openai_image_routes
from hotpipe.producer.routes.queues import add_queue_routes
from hotpipe.producer.routes.records import render
from hotpipe.producer.routes.uploads import add_upload_routes
from hotpipe.producer.routes.workers import add_worker_routes
from hotpipe.producer.service import Submitter
from hotpipe.producer.webhook_dispatcher import Dispatcher
from hotpipe.shared.connections import async_client, sync_client
from hotpipe.shared.errors import HotpipeError, TooLarge, TooManyRequests, Unauthorized, Unavailable
from hotpipe.shared.hub_cache import hub_fetch
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import AsyncJobReader, JobStore
from hotpipe.shared.webhook_outbox import Outbox

log = logging.getLogger(__name__)
RETRY_AFTER_S = "2"
REDIS_OPTIONS: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30,
                                 "socket_connect_timeout": 2, "retry_on_timeout": True}
#: where FastAPI says a value came from; our error field names the value itself
LOCATION_PREFIXES = frozenset({"body", "query", "path"})
#: where /docs and /redoc load their scripts and styles from (this process)
DOCS_ASSETS_URL = "/docs-assets"


@dataclass
class Services:
    """What the API talks to; built once per process from settings."""

    settings: Settings
    redis: redis.Redis
    store: JobStore
    storage: Storage

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        client = sync_client(settings, **REDIS_OPTIONS)
        return cls(settings, client, JobStore(client, settings.record_ttl_s), Storage(settings))

    def async_reader(self) -> AsyncJobReader:
        """A reader on an asyncio client; made inside the serving event loop (lifespan)."""
        return AsyncJobReader(async_client(self.settings, **REDIS_OPTIONS))


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
        await readers.pop().aclose()

    # /docs and /redoc load Swagger UI and ReDoc from this process (the fastapi-offline package
    # ships them), never from a CDN: a cluster without internet still renders them.
    app = FastAPIOffline(title="hotpipe", version=__version__, lifespan=lifespan, static_url=DOCS_ASSETS_URL,
                         description="Run Hugging Face Diffusers checkpoints as a fleet service.")
    app.state.services = svc
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    metrics = install_metrics(app, svc.redis)  # outside BodyLimit: its 413s are counted too
    _install_error_handlers(app)
    app.state.key_table = KeyTable.from_settings(settings)
    app.state.key_table.warn_if_open()
    app.state.read_limit = ReadLimit.from_settings(svc.redis, settings)
    submitter = make_submitter(svc)  # one per process: its Hub LoRA cache serves both routes
    add_job_routes(app, svc, submitter, readers, metrics)
    add_openai_image_routes(app, svc, submitter, readers, metrics)
    add_model_routes(app, svc)
    add_upload_routes(app, svc)
    add_queue_routes(app, svc.redis)
    add_health_routes(app, svc)
    add_worker_routes(app, svc.redis, settings)
    install_openapi(app)
    return app


def make_submitter(svc: Services) -> Submitter:
    """The submit path over ``svc``: admission, Hub lookups cached in Redis, warm-worker routing."""
    admission = Admission.from_settings(svc.redis, svc.settings)
    return Submitter(svc.settings, svc.store, svc.storage, hub_fetch(svc.redis, svc.settings.hub_cache_ttl_s),
                     admission=admission, router=make_router(svc.redis, svc.settings))


def start_dispatcher(svc: Services) -> Dispatcher | None:
    """The webhook dispatcher thread of this API process, when configured to run one."""
    if not (svc.settings.webhook_dispatcher and svc.settings.webhook_secret):
        return None
    dispatcher = Dispatcher(Outbox(svc.redis), svc.settings, lambda r: render(svc, r))
    dispatcher.start()
    return dispatcher


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
    def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        if is_openai_path(request.url.path):  # no route matched, but the OpenAI paths answer in OpenAI's shape
            status, body, headers = error_body(OpenAIError(str(exc.detail), status=exc.status_code, code=code))
            return JSONResponse(body, status_code=status, headers={**headers, **(exc.headers or {})})
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code)

    @app.exception_handler(redis.RedisError)
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
            await self._refuse(scope, send)
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
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body: dict[str, Any] = {"error": {"code": "body_too_large", "field": "body",
                                          "message": f"request body over {self.max_bytes} bytes"}}
        if is_openai_path(scope.get("path", "")):  # the OpenAI-compatible routes answer in OpenAI's shape
            body = error_body(TooLarge(body["error"]["message"], field="body"))[1]
        response = JSONResponse(body, status_code=413)
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
