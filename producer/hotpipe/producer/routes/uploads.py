"""``POST /v1/uploads``: store an input image and answer the ``s3://`` reference to put in ``inputs``."""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from hotpipe.producer.auth import Tenant
from hotpipe.shared.errors import InvalidRequest, TooLarge
from hotpipe.shared.images import check_image
from hotpipe.shared.job import Upload

if TYPE_CHECKING:
    from hotpipe.producer.api import Services

def add_upload_routes(app: FastAPI, svc: Services) -> None:
    """The upload route, storing into ``svc.storage`` under the tenant's uploads."""
    # the raw body is the image (no multipart form): the schema says which types
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
