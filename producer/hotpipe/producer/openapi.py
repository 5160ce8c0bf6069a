"""The API's OpenAPI document, complete: every error answer an operation can give, with its schema.

FastAPI documents the success answer of each route; the errors come from handlers and
dependencies it can't see (``api.py``'s error mapping, ``auth.py``, admission, ``BodyLimit``).
``install_openapi`` generates the document once, then adds the ``ErrorResponse`` schema and,
per operation, the error statuses this table says it can answer, so generated clients and
contract tests (``tests/e2e/test_api_schema.py`` runs schemathesis with every check) know them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from hotpipe.producer.openai_compat import is_openai_path

#: what each error status means, for every operation that can answer it
ERROR_DESCRIPTIONS = {
    401: "No valid API key: send `Authorization: Bearer <key>` (with keys configured)",
    403: "The checkpoint is not on the allowlist (`checkpoint_not_allowed`)",
    404: "No such job for this API key (or family, for queues)",
    409: "Conflicts with the job's state, or with the body an earlier request used",
    413: "The body is over the size limit",
    422: "The request is invalid; `error.field` names the field at fault and the message says what to do",
    429: "Rate limited or the family's queue is full; retry after `Retry-After` seconds",
    503: "A backing service (Redis, or the Hugging Face Hub for a Hub checkpoint or LoRA) is unavailable; retry "
         "after `Retry-After` seconds",
}
#: every /v1 operation: the key, malformed parameters, a Redis outage
V1_ERRORS = (401, 422, 503)
#: the extra errors of each operation beyond ``V1_ERRORS`` (paths not listed: none)
EXTRA_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/v1/jobs"): (403, 409, 413, 429),
    ("put", "/v1/jobs/{job_id}"): (403, 409, 413, 429),
    ("get", "/v1/jobs"): (429,),
    ("get", "/v1/jobs/{job_id}"): (404, 429),
    ("get", "/v1/jobs/{job_id}/events"): (404, 429),
    ("post", "/v1/jobs/{job_id}/cancel"): (404, 409),
    ("post", "/v1/uploads"): (413,),
    ("get", "/v1/queues/{family}"): (404,),
}
#: operations outside /v1 and what they can answer besides success
OTHER_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {("get", "/readyz"): (503,)}
#: pydantic keeps these constraint names when it can't map them to JSON Schema (a constraint on a
#: type with a before-validator); the document gets the JSON Schema keyword instead
CONSTRAINT_KEYWORDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


class ErrorDetail(BaseModel):
    """What went wrong, in words and as a stable code."""

    code: str = Field(description="Stable machine-readable code, e.g. `invalid_request`, `not_found`")
    message: str = Field(description="What was wrong and what to do instead")
    field: str | None = Field(None, description="The field, header or parameter at fault")
    details: list[dict[str, Any]] | None = Field(None, description="Every validation error (422 only)")


class ErrorResponse(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


def error_codes(method: str, path: str) -> tuple[int, ...]:
    """The error statuses operation ``method path`` declares (the OpenAI-compatible routes declare
    their own, in OpenAI's error shape: they never answer this API's 422)."""
    if is_openai_path(path):
        return ()
    if path.startswith("/v1/"):
        return V1_ERRORS + EXTRA_ERRORS.get((method, path), ())
    return OTHER_ERRORS.get((method, path), ())


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the error schema, each operation's error answers and JSON Schema bounds."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorResponse"] = error_schema
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for path, methods in document.get("paths", {}).items():
        for method, operation in methods.items():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in str(responses.get("422")):  # FastAPI's own: ours is ErrorResponse
                del responses["422"]
            for code in error_codes(method, path):
                # an answer the route declared itself keeps its words, and its schema if it has one
                answer = responses.setdefault(str(code), {"description": ERROR_DESCRIPTIONS[code]})
                answer.setdefault("content", content)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _json_schema_bounds(document)
    return document


def _json_schema_bounds(node: Any) -> None:
    """Rename pydantic's leftover constraint names (``gt``, ``le``, ...) to JSON Schema's, in place."""
    if isinstance(node, dict):
        if node.get("type") in ("number", "integer"):
            for name, keyword in CONSTRAINT_KEYWORDS.items():
                if name in node:
                    node[keyword] = node.pop(name)
        for value in node.values():
            _json_schema_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _json_schema_bounds(value)


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` answer the completed document (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(get_openapi(title=app.title, version=app.version,
                                                      description=app.description, routes=app.routes))
        return app.openapi_schema

    vars(app)["openapi"] = openapi  # the instance's, as FastAPI's docs extend it
