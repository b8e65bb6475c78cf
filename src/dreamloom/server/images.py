"""Images in and out of JSON: base64 PNG, with or without a ``data:image/...;base64,`` prefix."""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from dreamloom.server.errors import field_error


def decode_image(data: str, field: str | tuple) -> Image.Image:
    """The image in ``data``; a 422 naming ``field`` when it is not a decodable image."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=False)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return image.copy()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as error:
        raise field_error(field, f"not a decodable base64 image ({type(error).__name__})") from None


def encode_png(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
