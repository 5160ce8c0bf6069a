"""``GET /v1/models``: the catalog, in OpenAI's list shape with hotpipe's fields; pageable.

``limit`` and ``after`` page it (``has_more``, ``last_id``); ``GET /v1/models/{id}`` reads one
entry (ids may hold a ``/``: ``org/name`` folders).  Errors are OpenAI's shape, as on the Images API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, FastAPI, Query

from hotpipe.producer.auth import ReadingTenant
from hotpipe.producer.catalog import Catalog
from hotpipe.producer.routes.openai_images import ERROR_SCHEMA, OpenAIRoute
from hotpipe.shared.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from hotpipe.producer.api import Services

MODEL_SCHEMA: dict[str, Any] = {"type": "object", "required": ["id", "object", "created", "owned_by", "kind"],
                                "properties": {
    "id": {"type": "string", "description": "what to pass as model (or controlnet)"},
    "object": {"type": "string", "enum": ["model"]}, "created": {"type": "integer"},
    "owned_by": {"type": "string"},
    "kind": {"type": "string", "description": "checkpoint or controlnet"},
    "family": {"type": ["string", "null"], "description": "a checkpoint's family; the family a ControlNet fits"},
    "class_name": {"type": "string"},
    "tasks": {"type": "array", "items": {"type": "string"}, "description": "tasks a job may ask for"},
    "pipelines": {"type": "object", "additionalProperties": {"type": "string"}},
    "error": {"type": "string", "description": "why a checkpoint runs no task"}}}
LIMIT = "entries per page, at most HOTPIPE_MAX_LIST_LIMIT (100 by default)"
LIST_SCHEMA: dict[str, Any] = {"type": "object", "required": ["object", "data", "has_more"], "properties": {
    "object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": MODEL_SCHEMA},
    "has_more": {"type": "boolean"}, "first_id": {"type": ["string", "null"]},
    "last_id": {"type": ["string", "null"]}}}


def _responses(ok: dict[str, Any], *codes: int) -> dict[int | str, dict[str, Any]]:
    error = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
    text = {400: "a query parameter is invalid", 401: "no valid API key", 404: "no such model",
            429: "read rate limit reached", 503: "Redis is unavailable"}
    return {200: {"description": "OK", "content": {"application/json": {"schema": ok}}},
            **{code: {"description": text[code], **error} for code in codes},
            # declared so FastAPI adds no 422 of its own: validation errors here are OpenAI's 400
            "4XX": {"description": "any other client error, in the same shape", **error}}


def add_model_routes(app: FastAPI, svc: Services) -> None:
    """The catalog routes over the model root (``HOTPIPE_MODEL_ROOT``), cached ``HOTPIPE_MODELS_CACHE_S``."""
    catalog = Catalog(svc.settings.model_root, svc.settings.models_cache_s)
    max_limit = svc.settings.max_list_limit
    router = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible"])

    @router.get("/v1/models", responses=_responses(LIST_SCHEMA, 400, 401, 429, 503))
    def list_models(_: ReadingTenant,
                    limit: int = Query(100, ge=1, description=LIMIT, json_schema_extra={"maximum": max_limit}),
                    after: Annotated[str | None, Query(max_length=512)] = None) -> dict[str, Any]:
        """What can be run: checkpoints (family, tasks) and ControlNets (the family they fit), by id;
        ``after`` is the previous page's ``last_id``."""
        if limit > max_limit:
            raise InvalidRequest(f"limit is {limit}; at most {max_limit} (HOTPIPE_MAX_LIST_LIMIT)", field="limit")
        models, more = catalog.page(limit, after)
        data = [m.to_json() for m in models]
        return {"object": "list", "data": data, "has_more": more,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    @router.get("/v1/models/{model_id:path}", responses=_responses(MODEL_SCHEMA, 401, 404, 429, 503))
    def get_model(model_id: str, _: ReadingTenant) -> dict[str, Any]:
        """One catalog entry."""
        model = catalog.get(model_id)
        if model is None:
            raise NotFound(f"the model {model_id!r} does not exist: GET /v1/models lists them", field="model",
                           code="model_not_found")
        return model.to_json()

    app.include_router(router)
