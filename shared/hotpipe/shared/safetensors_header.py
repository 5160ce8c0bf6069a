"""A safetensors file's header, read without torch and without its tensors.

The format starts with 8 bytes (little-endian length) and then that many bytes of JSON: every
tensor's name, dtype, shape and offsets, plus an optional ``__metadata__`` table.  That is enough
to tell what model a LoRA was made for, so the API reads only this, never the weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from hotpipe.shared.errors import InvalidRequest

#: a header larger than this is not a LoRA's (real ones are tens of KB)
MAX_HEADER = 16 * 1024 * 1024


def read_header(path: Path, name: str, field: str) -> dict[str, Any]:
    """The header of the file at ``path`` as a dict; a 422 on ``field``.name when it is no safetensors file."""
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > MAX_HEADER:
                raise ValueError(f"a {size}-byte header")
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise InvalidRequest(f"{field}.name '{name}': {path.name} is not a readable safetensors file ({exc})",
                             field=f"{field}.name") from exc
    check_table(header, name, path.name, field)
    return dict(header)


def check_table(header: Any, name: str, filename: str, field: str) -> None:
    """A header must be a table of tensors, each with a shape (``__metadata__`` aside)."""
    if not isinstance(header, dict) or not all(isinstance(v, dict) and "shape" in v
                                               for k, v in header.items() if k != "__metadata__"):
        raise InvalidRequest(f"{field}.name '{name}': {filename} has no safetensors tensor table",
                             field=f"{field}.name")
