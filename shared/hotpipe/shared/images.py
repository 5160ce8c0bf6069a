"""Decode and check input images before anything is enqueued.

Every check happens on the header before pixels are decoded (size, pixel count), so a
decompression bomb or a huge upload is refused cheaply; then the image is fully loaded
so a truncated file fails here, with a 422, instead of on a GPU worker.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image

from hotpipe.shared.errors import InvalidRequest

FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
DATA_URI_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[\w.-]+)*)(?P<b64>;base64)?,")


@dataclass(frozen=True)
class InputImage:
    data: bytes
    ext: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return f"image/{self.ext}"


def decode_data_uri(uri: str, field: str, max_bytes: int) -> bytes:
    """The bytes of a base64 ``data:`` URI, refused before decoding when too large."""
    m = DATA_URI_RE.match(uri)
    if not m or not m.group("b64"):
        raise InvalidRequest(f"{field} must be a base64 data URI (data:image/png;base64,...)", field=field)
    payload = uri[m.end():]
    if len(payload) * 3 // 4 > max_bytes:
        raise InvalidRequest(f"{field} is larger than {max_bytes} bytes; send a smaller image", field=field)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{field} is not valid base64: {exc}", field=field) from exc


def check_image(data: bytes, field: str, max_bytes: int, max_pixels: int) -> InputImage:
    """Open ``data`` as a PNG, JPEG or WebP within the byte and pixel limits."""
    if len(data) > max_bytes:
        raise InvalidRequest(f"{field} is larger than {max_bytes} bytes; send a smaller image", field=field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            fmt = FORMATS.get(im.format or "")
            if fmt is None:
                raise InvalidRequest(f"{field} is a {im.format} image; send PNG, JPEG or WebP", field=field)
            width, height = im.size
            if width * height > max_pixels:
                raise InvalidRequest(f"{field} is {width}x{height}, over the limit of {max_pixels} pixels",
                                     field=field)
            im.load()
    except InvalidRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidRequest(f"{field} is too large to decode: {exc}", field=field) from exc
    except Exception as exc:  # Pillow raises many kinds for corrupt input
        raise InvalidRequest(f"{field} is not a readable image ({type(exc).__name__}: {exc}); send a valid "
                             "PNG, JPEG or WebP", field=field) from exc
    return InputImage(data, fmt, width, height)
