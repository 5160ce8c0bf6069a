"""The request contract: unknown fields, wrong types and out-of-range values are refused by name."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from hotpipe.shared.job import JobRequest, Params, Task

VALID: dict[str, Any] = {"checkpoint": "tiny-sd", "task": "text2image", "params": {"prompt": "a cat"}}


def request(**changes: Any) -> dict[str, Any]:
    """VALID with changes; a key like ``params.height`` sets a nested value."""
    doc = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        target = doc
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return doc


def refused_at(doc: dict[str, Any]) -> set[tuple[str | int, ...]]:
    with pytest.raises(ValidationError) as exc:
        JobRequest.model_validate(doc)
    return {tuple(e["loc"]) for e in exc.value.errors()}


def test_minimal_request_gets_the_defaults() -> None:
    req = JobRequest.model_validate(VALID)
    assert (req.task, req.params.num_images, req.output_format) == (Task.TEXT2IMAGE, 1, "png")
    assert req.inputs.given() == {} and req.params.seed is None


def test_full_request_is_accepted_from_json() -> None:
    doc = request(**{"params.guidance_scale": 7, "params.strength": 0.5, "params.height": 512,
                     "params.width": 768, "params.seed": 2**63 - 1, "params.num_images": 4,
                     "inputs.image": "s3://hotpipe/jobs/x/in.png", "revision": "refs/pr/1", "output_format": "webp"})
    req = JobRequest.model_validate_json(json.dumps(doc))
    assert (req.params.guidance_scale, req.params.height, req.params.num_images) == (7.0, 512, 4)
    assert req.inputs.given() == {"image": "s3://hotpipe/jobs/x/in.png"}


@pytest.mark.parametrize("where", ["surprise", "inputs.surprise"])
def test_unknown_fields_are_refused_at_every_level(where: str) -> None:
    assert tuple(where.split(".")) in refused_at(request(**{where: 1}))


def test_other_params_are_kept_for_the_producer_to_check_against_the_pipeline() -> None:
    """Pass-through: the resolved pipeline decides (tests/producer/test_api_validation.py refuses the rest)."""
    req = JobRequest.model_validate(request(**{"params.pag_scale": 3.0, "params.num_images_per_prompt": 2}))
    assert req.params.model_extra == {"pag_scale": 3.0, "num_images_per_prompt": 2}
    assert req.params.model_dump(exclude_none=True)["pag_scale"] == 3.0


@pytest.mark.parametrize(("field", "value"), [
    ("num_inference_steps", "20"), ("guidance_scale", "7.5"), ("strength", "0.5"), ("height", "512"),
    ("num_images", "2"), ("seed", "1"), ("num_inference_steps", 20.0), ("seed", 1.5),
])
def test_strings_and_floats_for_integers_are_refused(field: str, value: Any) -> None:
    assert ("params", field) in refused_at(request(**{f"params.{field}": value}))


@pytest.mark.parametrize("field", ["num_inference_steps", "guidance_scale", "strength", "height", "width",
                                   "num_images", "seed"])
@pytest.mark.parametrize("value", [True, False])
def test_booleans_for_numbers_are_refused(field: str, value: bool) -> None:
    assert ("params", field) in refused_at(request(**{f"params.{field}": value}))


@pytest.mark.parametrize("field", ["guidance_scale", "strength"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(field: str, value: float) -> None:
    assert ("params", field) in refused_at(request(**{f"params.{field}": value}))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_in_json(literal: str) -> None:
    body = json.dumps(VALID).replace('"a cat"}', f'"a cat", "guidance_scale": {literal}}}')
    with pytest.raises(ValidationError) as exc:
        JobRequest.model_validate_json(body)
    assert ("params", "guidance_scale") in {tuple(e["loc"]) for e in exc.value.errors()}


@pytest.mark.parametrize(("field", "value"), [
    ("height", 500), ("width", 513), ("height", 0), ("width", 16392), ("num_images", 0), ("num_images", 65),
    ("num_inference_steps", 0), ("seed", -1), ("strength", 0.0), ("guidance_scale", 100.5), ("prompt", ""),
])
def test_out_of_range_values_are_refused(field: str, value: Any) -> None:
    assert ("params", field) in refused_at(request(**{f"params.{field}": value}))


@pytest.mark.parametrize(("field", "value"), [
    ("task", "text-to-image"), ("output_format", "gif"), ("inputs.image", "ftp://example.com/cat.png"),
    ("revision", "main branch"), ("checkpoint", ""), ("params", {"negative_prompt": "x"}),
])
def test_bad_top_level_values_are_refused(field: str, value: Any) -> None:
    # (http(s) input URLs pass the model; the producer refuses them unless enabled, and then
    # only for public hosts: tests/producer/test_api_validation.py)
    locs = refused_at(request(**{field: value}))
    assert any(loc[: len(field.split("."))] == tuple(field.split(".")) for loc in locs)


def test_params_model_alone_defaults_num_images_to_one() -> None:
    assert Params(prompt="x").num_images == 1
