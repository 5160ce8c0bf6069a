"""Input images: data URIs decoded and images checked before anything is enqueued."""

from __future__ import annotations

import base64
import io
import random
import struct
import zlib
from collections.abc import Callable

import pytest
from PIL import Image

from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.images import check_image, decode_data_uri

FIELD = "inputs.image"
MAX_BYTES = 1_000_000
MAX_PIXELS = 4096 * 4096


def encode(fmt: str, size: tuple[int, int] = (16, 8), noise: bool = False) -> bytes:
    if noise:
        im = Image.frombytes("RGB", size, random.Random(0).randbytes(size[0] * size[1] * 3))
    else:
        im = Image.new("RGB", size, "red")
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_claiming(width: int, height: int) -> bytes:
    """A tiny 1x1 PNG whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""
    png = bytearray(encode("PNG", (1, 1)))
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def refused(fn: Callable[..., object], *args: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as exc:
        fn(*args)
    assert (exc.value.field, exc.value.status_code) == (FIELD, 422)
    return exc.value


@pytest.mark.parametrize(("fmt", "mime", "ext"), [
    ("PNG", "image/png", "png"),
    ("JPEG", "image/jpeg", "jpeg"),
    ("WEBP", "image/webp", "webp"),
])
def test_valid_images_are_accepted_with_their_size(fmt: str, mime: str, ext: str) -> None:
    data = decode_data_uri(data_uri(encode(fmt), mime), FIELD, MAX_BYTES)
    image = check_image(data, FIELD, MAX_BYTES, MAX_PIXELS)
    assert (image.ext, image.width, image.height, image.content_type) == (ext, 16, 8, mime)
    assert image.data == data


def test_data_uri_with_parameters_decodes() -> None:
    uri = "data:image/png;name=cat.png;base64," + base64.b64encode(b"abc").decode()
    assert decode_data_uri(uri, FIELD, MAX_BYTES) == b"abc"


@pytest.mark.parametrize(("uri", "why"), [
    (base64.b64encode(encode("PNG")).decode(), "data URI"),
    ("https://example.com/cat.png", "data URI"),
    ("data:image/png,rawbytes", "data URI"),
    ("", "data URI"),
    ("data:image/png;base64,@@@not-base64@@@", "not valid base64"),
    ("data:image/png;base64,abc", "not valid base64"),
    ("data:image/png;base64,aGVsbG8=\n", "not valid base64"),
])
def test_bad_data_uris_are_refused(uri: str, why: str) -> None:
    assert why in refused(decode_data_uri, uri, FIELD, MAX_BYTES).message


def test_oversized_data_uri_is_refused_before_decoding() -> None:
    uri = "data:image/png;base64," + "@" * 4000  # not even base64: decoding would fail differently
    assert "larger than 1000 bytes" in refused(decode_data_uri, uri, FIELD, 1000).message


@pytest.mark.parametrize(("data", "why"), [
    (encode("GIF"), "GIF"),
    (encode("BMP"), "BMP"),
    (encode("PNG", (64, 64), noise=True)[:2000], "not a readable image"),
    (encode("PNG")[:20], "not a readable image"),
    (random.Random(1).randbytes(512), "not a readable image"),
    (b"", "not a readable image"),
])
def test_unusable_images_are_refused(data: bytes, why: str) -> None:
    assert why in refused(check_image, data, FIELD, MAX_BYTES, MAX_PIXELS).message


def test_image_over_the_byte_limit_is_refused() -> None:
    data = encode("PNG")
    assert "larger than" in refused(check_image, data, FIELD, len(data) - 1, MAX_PIXELS).message


def test_image_over_the_pixel_limit_is_refused() -> None:
    data = encode("PNG", (2000, 2000))
    assert "2000x2000" in refused(check_image, data, FIELD, MAX_BYTES, 1_000_000).message


@pytest.mark.parametrize(("width", "height", "max_pixels", "why"), [
    (5_000, 5_000, MAX_PIXELS, "5000x5000, over the limit"),  # our limit, from the header alone
    (10_000, 10_000, 10**12, "too large to decode"),  # Pillow's bomb warning, made an error
    (30_000, 30_000, 10**12, "too large to decode"),  # Pillow's bomb error
])
def test_decompression_bomb_is_refused(width: int, height: int, max_pixels: int, why: str) -> None:
    bomb = png_claiming(width, height)
    assert len(bomb) < 100
    assert why in refused(check_image, bomb, FIELD, MAX_BYTES, max_pixels).message
