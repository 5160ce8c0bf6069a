"""OpenAI Images API <-> hotpipe: requests become ``JobRequest``s, records become ``ImagesResponse``s.

No I/O and no torch here; the routes (``routes/openai_images.py``) submit, wait and fetch.
``model`` is a checkpoint, ``n`` the job's ``num_images``, ``size`` ("WxH") its width and height;
any other body field is hotpipe's own (``seed``, ``steps``, ``negative_prompt``, ``priority``, ...),
as the official SDK sends them with ``extra_body``.  Edits take OpenAI's mask (transparent pixels
mark the area to repaint) and hand the worker Diffusers' (white marks it).  Every error is
OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, naming OpenAI's parameter.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hotpipe.shared.errors import HotpipeError, InvalidRequest, TooManyRequests, Unauthorized, Unavailable
from hotpipe.shared.job import Inputs, JobRecord, JobRequest, Task
from hotpipe.shared.settings import Settings

SIZE_RE = re.compile(r"^(?P<w>\d{1,5})x(?P<h>\d{1,5})$")
#: extra body fields that are fields of the job rather than of the pipeline call: every field of
#: ``POST /v1/jobs`` the OpenAI request does not already say (so new job fields pass through as they come)
JOB_FIELDS = frozenset(JobRequest.model_fields) - {"checkpoint", "task", "params", "inputs"}
#: extra body fields that are input images (``data:`` or ``s3://`` URIs, as in ``POST /v1/jobs``)
INPUT_FIELDS = frozenset(Inputs.model_fields) - {"image", "mask_image"}
#: shorter names for pipeline arguments
ALIASES = {"steps": "num_inference_steps"}
#: OpenAI fields hotpipe accepts and ignores (no quality tiers, styles or end-user ids here)
IGNORED = frozenset({"user", "quality", "style", "moderation", "background"})
#: extra fields a multipart form sends as text that must stay text (others are read as JSON scalars)
TEXT_FIELDS = frozenset({"negative_prompt", "revision", "controlnet", "control_image", "prompt_2",
                         "negative_prompt_2", "prompt_3", "negative_prompt_3"})
#: hotpipe's field names -> the OpenAI parameter a caller sent
PARAMS = {"checkpoint": "model", "params.num_images": "n", "params.height": "size", "params.width": "size",
          "inputs.image": "image", "inputs.mask_image": "mask", "params": "prompt"}
#: OpenAI's error ``type`` per HTTP status
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
               429: "rate_limit_error", 504: "timeout"}
#: the OpenAI-compatible routes
OPENAI_PATHS = ("/v1/images/", "/v1/models")
#: outcomes whose answer must not make the SDK send the request again (it would make another job)
NO_RETRY = {"x-should-retry": "false"}


class OpenAIError(HotpipeError):
    """An error that already speaks OpenAI: its own status, type, param and code."""

    def __init__(self, message: str, *, status: int, param: str | None = None, code: str,
                 error_type: str = "invalid_request_error", job_ids: Iterable[str] = (),
                 headers: Mapping[str, str] | None = None):
        super().__init__(message, field=param, code=code)
        self.status_code = status
        self.error_type = error_type
        self.job_ids = list(job_ids)
        self.headers = dict(headers or {})


class ImageRequest(BaseModel):
    """What generations and edits share; other fields are hotpipe's (see the module doc)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256, description="a checkpoint: see GET /v1/models")
    prompt: str = Field(min_length=1)
    n: int = Field(1, ge=1, description="images to make (at most HOTPIPE_MAX_IMAGES)")
    size: str | None = Field(None, description='"WIDTHxHEIGHT" (multiples of 8) or "auto"')
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["png", "jpeg", "webp"] | None = None


class ImageGenerationRequest(ImageRequest):
    """Body of ``POST /v1/images/generations``."""

    model_config = ConfigDict(extra="allow")


#: what /docs and the OpenAPI document show as the body of ``POST /v1/images/generations``
GENERATION_EXAMPLES = {"generate": {"summary": "one image, hotpipe's own fields as extra body", "value": {
    "model": "my-checkpoint", "prompt": "a red cube on a table", "n": 1, "size": "512x512",
    "response_format": "url", "seed": 7, "steps": 20, "negative_prompt": "blurry"}}}


def is_openai_path(path: str) -> bool:
    """Whether ``path`` is one of the OpenAI-compatible routes (their errors are OpenAI's shape)."""
    return path.startswith(OPENAI_PATHS)


def parse_size(size: str | None, max_side: int) -> tuple[int, int] | None:
    """(width, height) of ``size``; None for "auto" or no size."""
    if size is None or size == "auto":
        return None
    m = SIZE_RE.match(size)
    w, h = (int(m["w"]), int(m["h"])) if m else (0, 0)
    if not (m and 8 <= w <= max_side and 8 <= h <= max_side and w % 8 == 0 and h % 8 == 0):
        raise InvalidRequest(f"size {size!r} is not one this server makes: give WIDTHxHEIGHT with both sides "
                             f"multiples of 8 from 8 to {max_side} (e.g. 512x512), or auto", field="size")
    return w, h


def check_n(n: int, settings: Settings) -> None:
    if n > settings.max_images:
        raise InvalidRequest(f"n is {n}; this server makes at most {settings.max_images} images per request "
                             "(HOTPIPE_MAX_IMAGES)", field="n")


def job_request(req: ImageRequest, task: Task, settings: Settings, inputs: dict[str, str] | None = None,
                size_in_params: bool = True) -> JobRequest:
    """The ``JobRequest`` an OpenAI request asks for; ``InvalidRequest`` naming the OpenAI parameter."""
    check_n(req.n, settings)
    params: dict[str, Any] = {"prompt": req.prompt, "num_images": req.n}
    size = parse_size(req.size, settings.max_side)
    if size is not None and size_in_params:
        params["width"], params["height"] = size
    job: dict[str, Any] = {"checkpoint": req.model, "task": task.value, "params": params, "inputs": dict(inputs or {})}
    if req.output_format is not None:
        job["output_format"] = req.output_format
    for name, value in (req.model_extra or {}).items():
        if name in IGNORED:
            continue
        if name in JOB_FIELDS:
            job[name] = value
        elif name in INPUT_FIELDS:
            job["inputs"][name] = value
        else:
            params[ALIASES.get(name, name)] = value
    try:
        return JobRequest.model_validate(job)
    except ValidationError as exc:
        raise invalid(exc.errors()) from None


def form_fields(form: Mapping[str, str]) -> dict[str, Any]:
    """A multipart form's text fields as JSON values: extra fields that aren't text are read as JSON
    scalars ("7" -> 7, "true" -> true), so they reach the pipeline typed as in a JSON body."""
    out: dict[str, Any] = {}
    for name, value in form.items():
        out[name] = value if name in ImageRequest.model_fields or name in TEXT_FIELDS else _scalar(value)
    return out


def _scalar(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool | str) and value is not None else text


def param_for(field: str | None) -> str | None:
    """The OpenAI parameter behind one of hotpipe's field names."""
    if field is None:
        return None
    if field in PARAMS:
        return PARAMS[field]
    head, _, rest = field.partition(".")
    return rest if head in ("params", "inputs") and rest else field


def invalid(errors: Iterable[Mapping[str, Any]]) -> InvalidRequest:
    """pydantic's errors (FastAPI's or ``JobRequest``'s) as one error naming the first field at fault."""
    first = next(iter(errors), {})
    parts = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    if first.get("type") == "json_invalid":
        return InvalidRequest("the body is not valid JSON", field=None)
    field = ".".join(parts) or None
    param = param_for(field)
    if first.get("type") == "missing":
        return InvalidRequest(f"{param} is required", field=param)
    return InvalidRequest(f"{param or 'body'}: {first.get('msg', 'invalid')}", field=param)


def error_body(exc: HotpipeError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, OpenAI error body, headers) for any error these routes raise."""
    if isinstance(exc, OpenAIError):
        status, error_type, headers = exc.status_code, exc.error_type, exc.headers
    else:
        status = 400 if exc.status_code == 422 else exc.status_code  # OpenAI's "bad request" is 400
        error_type = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        headers = _headers(exc)
    param, code = param_for(exc.field), exc.code
    if code == "checkpoint_not_found" and param == "model":  # as OpenAI answers an unknown model
        status, code = 404, "model_not_found"
    body: dict[str, Any] = {"message": exc.message, "type": error_type, "param": param, "code": code}
    if isinstance(exc, OpenAIError) and exc.job_ids:
        body["job_ids"] = exc.job_ids
    return status, {"error": body}, headers


def _headers(exc: HotpipeError) -> dict[str, str]:
    if isinstance(exc, TooManyRequests):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, Unavailable):
        return {"Retry-After": "2"}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    return {}


def succeeded(record: JobRecord | None, job_id: str, waited_s: float) -> JobRecord:
    """The record of a job that succeeded; else the ``OpenAIError`` that says what became of it."""
    if record is None:  # the record expired while we waited: only with a tiny HOTPIPE_RECORD_TTL_S
        raise OpenAIError(f"job {job_id} is gone (its record expired)", status=500, code="job_lost",
                          error_type="server_error", job_ids=[job_id], headers=NO_RETRY)
    if record.status.value == "succeeded":
        return record
    if not record.status.is_terminal():
        raise OpenAIError(
            f"job {job_id} did not finish within {waited_s:g} s (HOTPIPE_OPENAI_WAIT_S); it goes on: read it at "
            f"GET /v1/jobs/{job_id} (send an Idempotency-Key to make a retry wait for the same job)",
            status=504, code="job_wait_timeout", error_type="timeout", job_ids=[job_id], headers=NO_RETRY)
    error = record.error
    if record.status.value == "canceled":
        raise OpenAIError(f"job {job_id} was canceled", status=409, code="job_canceled", job_ids=[job_id],
                           headers=NO_RETRY)
    message = f"job {job_id} failed: {error.message if error else 'no reason recorded'}"
    raise OpenAIError(message, status=500, code=error.code if error else "job_failed", error_type="server_error",
                       job_ids=[job_id], headers=NO_RETRY)


def images_response(record: JobRecord, response_format: str, url: Callable[[str], str],
                    b64: Callable[[str], str]) -> dict[str, Any]:
    """OpenAI's ``ImagesResponse`` for a succeeded job, plus hotpipe's ``job_ids``."""
    images = record.result.images if record.result else []
    data = [{"b64_json": b64(i.key)} if response_format == "b64_json" else {"url": url(i.key)} for i in images]
    out: dict[str, Any] = {"created": int(record.created_at.timestamp()), "data": data, "job_ids": [record.id]}
    if images:
        out["size"] = f"{images[0].width}x{images[0].height}"
        out["output_format"] = images[0].content_type.removeprefix("image/")
    return out


def edit_inputs(image: bytes, mask: bytes | None, size: tuple[int, int] | None) -> dict[str, str]:
    """``inputs`` of an edit: the image (RGB), resized to ``size`` when given, and OpenAI's mask turned into
    Diffusers' (fully transparent -> white = repaint, the rest black).  ``image`` was checked already."""
    picture = Image.open(io.BytesIO(image)).convert("RGB")
    if size is not None and picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    inputs = {"image": png_data_uri(picture)}
    if mask is not None:
        inputs["mask_image"] = png_data_uri(diffusers_mask(mask, Image.open(io.BytesIO(image)).size, size))
    return inputs


def diffusers_mask(mask: bytes, image_size: tuple[int, int], size: tuple[int, int] | None) -> Image.Image:
    """OpenAI's mask (alpha 0 = edit here) as Diffusers' (white = repaint), at the image's final size."""
    im = Image.open(io.BytesIO(mask))
    if "A" not in im.getbands() and "transparency" not in im.info:
        raise InvalidRequest("the mask has no alpha channel: send a PNG whose fully transparent pixels mark the "
                             "area to repaint (as OpenAI's edits take it)", field="mask")
    if im.size != image_size:
        raise InvalidRequest(f"the mask is {im.size[0]}x{im.size[1]} but the image is "
                             f"{image_size[0]}x{image_size[1]}; they must be the same size", field="mask")
    white = im.convert("RGBA").getchannel("A").point(lambda a: 255 if a == 0 else 0)
    return white.resize(size, Image.Resampling.NEAREST) if size is not None and white.size != size else white


def png_data_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
