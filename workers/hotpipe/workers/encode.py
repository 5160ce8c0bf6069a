"""Encode generated images with their generation parameters embedded.

PNG carries them in a ``parameters`` text chunk; WebP and JPEG in the EXIF
ImageDescription tag.  Either way the same JSON is also in the job's sidecar.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from hotpipe.shared.storage import CONTENT_TYPES

EXIF_IMAGE_DESCRIPTION = 0x010E
PIL_FORMATS = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}


@dataclass(frozen=True)
class Encoded:
    data: bytes
    ext: str
    width: int
    height: int
    sha256: str

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.ext]


def encode(image: Image.Image, fmt: str, parameters: dict[str, Any]) -> Encoded:
    """``image`` as ``fmt`` bytes with ``parameters`` (JSON) embedded."""
    text = json.dumps(parameters, sort_keys=True)
    buf = io.BytesIO()
    if fmt == "png":
        info = PngInfo()
        info.add_text("parameters", text)
        image.save(buf, format="PNG", pnginfo=info, compress_level=1)
    else:
        exif = Image.Exif()
        exif[EXIF_IMAGE_DESCRIPTION] = text
        image.convert("RGB").save(buf, format=PIL_FORMATS[fmt], exif=exif.tobytes(), quality=95)
    data = buf.getvalue()
    return Encoded(data, fmt, image.width, image.height, hashlib.sha256(data).hexdigest())
