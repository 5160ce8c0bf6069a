"""The CLI's ``--lora NAME[@WEIGHT_NAME][:SCALE]`` as the request's ``loras`` entries."""

from __future__ import annotations

from typing import Any

import pytest

from hotpipe.producer.cli_submit import lora_arg


@pytest.mark.parametrize(("text", "lora"), [
    ("tiny-lora-sd", {"name": "tiny-lora-sd"}),
    ("tiny-lora-sd:0.8", {"name": "tiny-lora-sd", "scale": 0.8}),
    ("someone/styles@pixel.safetensors", {"name": "someone/styles", "weight_name": "pixel.safetensors"}),
    ("someone/styles@pixel.safetensors:-0.5", {"name": "someone/styles", "weight_name": "pixel.safetensors",
                                              "scale": -0.5}),
])
def test_lora_flags_become_request_entries(text: str, lora: dict[str, Any]) -> None:
    assert lora_arg(text) == lora


def test_a_scale_that_is_no_number_says_how_to_write_the_flag() -> None:
    with pytest.raises(SystemExit, match="NAME\\[@WEIGHT_NAME\\]\\[:SCALE\\]"):
        lora_arg("someone/styles@pixel.safetensors:strong")
