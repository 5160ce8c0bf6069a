from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image

from hotpipe.workers.encode import EXIF_IMAGE_DESCRIPTION, encode


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_encode_embeds_parameters(fmt: str) -> None:
    image = Image.new("RGB", (24, 16), (200, 10, 10))
    enc = encode(image, fmt, {"seed": 3, "prompt": "p"})
    decoded = Image.open(io.BytesIO(enc.data))
    assert decoded.format == fmt.upper() and decoded.size == (24, 16)
    assert (enc.width, enc.height, enc.content_type) == (24, 16, f"image/{fmt}")
    assert enc.sha256 == hashlib.sha256(enc.data).hexdigest()
    text = decoded.text["parameters"] if fmt == "png" else decoded.getexif()[EXIF_IMAGE_DESCRIPTION]  # type: ignore[attr-defined]
    assert json.loads(text) == {"seed": 3, "prompt": "p"}
