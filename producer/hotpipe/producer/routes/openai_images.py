"""``POST /v1/images/generations`` and ``POST /v1/images/edits``: the OpenAI Images API over hotpipe jobs.

Each request is one ordinary job (same keys, tenants, limits; it shows in ``GET /v1/jobs``) submitted
through the same ``Submitter``, then waited for on the job's channel for at most
``HOTPIPE_OPENAI_WAIT_S``; past that the answer is a 504 naming the job, which goes on.  Every error
on these routes, validation and authentication included, is OpenAI's shape (``OpenAIRoute``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

import redis
from fastapi import APIRouter, Body, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from hotpipe.producer.auth import Tenant
from hotpipe.producer.metrics import ApiMetrics
from hotpipe.producer.openai_compat import (
    GENERATION_EXAMPLES,
    ImageGenerationRequest,
    ImageRequest,
    edit_inputs,
    error_body,
    form_fields,
    images_response,
    invalid,
    job_request,
    parse_size,
    succeeded,
)
from hotpipe.producer.routes.jobs import check_idempotency_key
from hotpipe.producer.service import Submitter
from hotpipe.shared.errors import HotpipeError, InvalidRequest, TooLarge, Unavailable
from hotpipe.shared.images import check_image
from hotpipe.shared.job import JobRecord, JobRequest, Task
from hotpipe.shared.store import AsyncJobReader

if TYPE_CHECKING:
    from hotpipe.producer.api import Services

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                             description="Same key and body: wait for the same job again")]
ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]},
                   "job_ids": {"type": "array", "items": {"type": "string"},
                               "description": "the jobs a timeout or failure is about"}}}}}
IMAGES_SCHEMA = {"type": "object", "required": ["created", "data"], "properties": {
    "created": {"type": "integer"}, "size": {"type": "string"}, "output_format": {"type": "string"},
    "job_ids": {"type": "array", "items": {"type": "string"}},
    "data": {"type": "array", "items": {"type": "object", "properties": {
        "url": {"type": "string"}, "b64_json": {"type": "string"}}}}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


#: every answer these routes give, in OpenAI's shapes
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the images", "content": {"application/json": {"schema": IMAGES_SCHEMA}}},
    400: _error("a parameter is invalid (param names it); nothing was enqueued"),
    401: _error("no valid API key (Authorization: Bearer)"), 403: _error("the checkpoint is not allowed"),
    404: _error("model_not_found: no such checkpoint"), 409: _error("the job was canceled, or the "
                                                                    "Idempotency-Key names another request"),
    413: _error("an upload or the body is too large"), 429: _error("rate limit or queue bound reached"),
    500: _error("the job failed (code: its error code; job_ids names it)"),
    503: _error("Redis or another backing service is unavailable"),
    504: _error("the job did not finish within HOTPIPE_OPENAI_WAIT_S; it goes on (job_ids names it)"),
    # declared so FastAPI adds no 422 of its own: validation errors here are OpenAI's 400
    "4XX": _error("any other client error, in the same shape")}
EDIT_FORM = {"type": "object", "required": ["image", "prompt", "model"], "properties": {
    "image": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP"},
    "mask": {"type": "string", "format": "binary",
             "description": "PNG with alpha: fully transparent pixels mark the area to repaint (inpainting); "
                            "without a mask the edit is image2image"},
    "model": {"type": "string"}, "prompt": {"type": "string"}, "n": {"type": "integer", "minimum": 1},
    "size": {"type": "string"}, "response_format": {"type": "string", "enum": ["url", "b64_json"]}},
    "additionalProperties": True}


class OpenAIRoute(APIRoute):
    """A route whose every error, including FastAPI's validation and the auth dependency's, is OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return openai_response(invalid(exc.errors()))
            except HotpipeError as exc:
                return openai_response(exc)
            except redis.RedisError:
                return openai_response(Unavailable("a backing service (Redis) is unavailable; retry shortly"))

        return route


def openai_response(exc: HotpipeError) -> JSONResponse:
    status, body, headers = error_body(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def add_openai_image_routes(app: FastAPI, svc: Services, submitter: Submitter, readers: list[AsyncJobReader],
                            metrics: ApiMetrics) -> None:
    """The Images API routes; jobs are waited for on ``readers[0]``, the lifespan's asyncio reader."""
    router = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible"])
    run = _runner(svc, submitter, readers, metrics)

    @router.post("/v1/images/generations", responses=RESPONSES, response_class=JSONResponse)
    async def create_images(body: Annotated[ImageGenerationRequest, Body(openapi_examples=GENERATION_EXAMPLES)],
                            tenant: Tenant,
                            idempotency_key: IdempotencyKey = None) -> Response:
        """Text to image (OpenAI's ``images.generate``): one text2image job, waited for."""
        job = job_request(body, Task.TEXT2IMAGE, svc.settings)
        return await run(job, body, tenant, check_idempotency_key(idempotency_key))

    @router.post("/v1/images/edits", responses=RESPONSES, response_class=JSONResponse,
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "multipart/form-data": {"schema": EDIT_FORM}}}})
    async def edit_images(request: Request, tenant: Tenant, idempotency_key: IdempotencyKey = None) -> Response:
        """Edit an image (OpenAI's ``images.edit``): with ``mask`` inpainting, without it image2image."""
        key = check_idempotency_key(idempotency_key)
        body, files = await _read_form(request)
        req, job = await run_in_threadpool(_edit_job, svc, body, files)
        return await run(job, req, tenant, key)

    app.include_router(router)


def _runner(svc: Services, submitter: Submitter, readers: list[AsyncJobReader],
            metrics: ApiMetrics) -> Callable[[JobRequest, ImageRequest, str, str | None], Awaitable[Response]]:
    async def run(job: JobRequest, req: ImageRequest, tenant: str, key: str | None) -> Response:
        submitted = await run_in_threadpool(submitter.submit, job, tenant=tenant, idempotency_key=key)
        job_id = submitted.record.id
        if submitted.created:
            metrics.job_submitted(submitted.record.family, job.priority)
        started = time.monotonic()
        final: JobRecord | None = submitted.record
        if not submitted.record.status.is_terminal():
            final = await readers[0].wait(job_id, svc.settings.openai_wait_s)
        record = succeeded(final, job_id, round(time.monotonic() - started, 1))
        return JSONResponse(await run_in_threadpool(_answer, svc, record, req.response_format))

    return run


def _answer(svc: Services, record: JobRecord, response_format: str) -> dict[str, Any]:
    return images_response(record, response_format, svc.storage.presign,
                           lambda key: base64.b64encode(svc.storage.get(key)).decode())


async def _read_form(request: Request) -> tuple[dict[str, str], dict[str, bytes]]:
    """The multipart form's text fields and file parts (``image`` or the SDK's ``image[]``, ``mask``)."""
    try:
        form = await request.form(max_files=4, max_fields=64)
    except StarletteHTTPException as exc:
        raise InvalidRequest(f"the body is not a readable multipart form: {exc.detail}", field=None) from exc
    texts: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for name, value in form.multi_items():
        field = "image" if name == "image[]" else name
        if isinstance(value, UploadFile):
            if field in files:
                raise InvalidRequest(f"send one {field}; this server edits one image per request", field=field)
            files[field] = await value.read()
        else:
            texts[name] = value
    return texts, files


def _edit_job(svc: Services, body: dict[str, str], files: dict[str, bytes]) -> tuple[ImageRequest, JobRequest]:
    s = svc.settings
    try:
        req = ImageRequest.model_validate(form_fields(body))
    except ValidationError as exc:
        raise invalid(exc.errors()) from None
    if "image" not in files:
        raise InvalidRequest("image is required: send the image to edit as a file part named image", field="image")
    for name, data in files.items():
        if name not in ("image", "mask"):
            raise InvalidRequest(f"unexpected file part {name!r}; send image and optionally mask", field=name)
        if len(data) > s.max_input_bytes:
            raise TooLarge(f"{name} is {len(data)} bytes; at most {s.max_input_bytes} (HOTPIPE_MAX_INPUT_BYTES)",
                           field=name)
        check_image(data, name, s.max_input_bytes, s.max_input_pixels)
    size = parse_size(req.size, s.max_side)
    task = Task.INPAINTING if "mask" in files else Task.IMAGE2IMAGE
    inputs = edit_inputs(files["image"], files.get("mask"), size)
    return req, job_request(req, task, s, inputs, size_in_params=False)
