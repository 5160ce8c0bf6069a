"""The completed OpenAPI document: error answers with their schema, bounds, examples."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from hotpipe.producer.openai_compat import is_openai_path
from hotpipe.producer.openapi import complete, error_codes
from hotpipe.shared.settings import Settings

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def test_every_v1_operation_declares_its_errors(api: TestClient, settings: Settings) -> None:
    document = api.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert set(document["components"]["schemas"]["ErrorResponse"]["required"]) == {"error"}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if is_openai_path(path):  # OpenAI's routes declare their own errors, in OpenAI's shape
                assert error_codes(method, path) == () and "422" not in operation["responses"], (method, path)
                continue
            declared = {code for code in operation["responses"] if code[0] in "45"}
            assert declared == {str(c) for c in error_codes(method, path)}, (method, path)
            for code in declared:
                assert operation["responses"][code]["content"]["application/json"]["schema"] == ERROR_REF
    jobs = document["paths"]["/v1/jobs"]
    limit = next(p for p in jobs["get"]["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, settings.max_list_limit)
    wait = next(p for p in document["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"] if p["name"] == "wait")
    assert wait["schema"]["maximum"] == settings.wait_max_s
    assert len(jobs["post"]["requestBody"]["content"]["application/json"]["examples"]) >= 3


def test_a_routes_own_error_answer_is_kept_and_bounds_become_json_schema() -> None:
    own = {"description": "OpenAI-shaped", "content": {"application/json": {"schema": {"type": "object"}}}}
    document: dict[str, Any] = {"paths": {"/v1/jobs": {"post": {"responses": {"401": {"description": "no key"},
                                                                               "409": own}}}},
                                "components": {"schemas": {"Box": {"type": "number", "gt": 0, "le": 9}}}}
    done = complete(document)
    responses = done["paths"]["/v1/jobs"]["post"]["responses"]
    assert responses["409"] == own
    assert responses["401"] == {"description": "no key", "content": {"application/json": {"schema": ERROR_REF}}}
    assert {"403", "413", "422", "429", "503"} <= set(responses)
    assert done["components"]["schemas"]["Box"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 9}
