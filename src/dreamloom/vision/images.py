"""Images into a vision model and out to a provider: opened with a clear error when they are
not images or are too large, and re-encoded small enough for remote endpoints."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from PIL import Image

from dreamloom.images import MAX_PIXELS, check_size, decode_image

#: An image as callers hold it: a PIL image, a file path, raw bytes, or a ``data:`` URL.
ImageInput = Image.Image | Path | str | bytes
#: Longest side sent to a remote provider; OpenAI and most Llama 4 hosts rescale beyond it anyway.
REMOTE_MAX_SIDE = 1024
#: Largest encoded image sent to a provider before falling back from PNG to JPEG.
REMOTE_MAX_BYTES = 4 * 2**20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def decode_data_url(url: str, what: str = "the image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image in a ``data:image/...;base64,...`` URL."""
    header, sep, payload = url.partition(",")
    if not url.startswith("data:") or not sep or ";base64" not in header:
        raise ValueError(f"{what} must be a data:image/...;base64,... URL")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: the data URL's base64 payload does not decode") from None
    return decode_image(raw, what, max_pixels).convert("RGB")


def load_image(source: ImageInput, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``source`` as an RGB image: a PIL image, a path, encoded bytes, or a ``data:`` URL. A
    ValueError (FileNotFoundError for a missing file) names what is wrong."""
    if isinstance(source, Image.Image):
        return check_size(source, max_pixels=max_pixels).convert("RGB")
    if isinstance(source, bytes):
        return decode_image(source, "the image data", max_pixels).convert("RGB")
    if isinstance(source, str) and source.startswith("data:"):
        return decode_data_url(source, max_pixels=max_pixels)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    return decode_image(path.read_bytes(), str(path), max_pixels).convert("RGB")


def to_data_url(image: Image.Image, max_side: int = REMOTE_MAX_SIDE, max_bytes: int = REMOTE_MAX_BYTES) -> str:
    """``image`` as a ``data:`` URL a provider accepts: downscaled to ``max_side`` (aspect kept),
    PNG when that stays under ``max_bytes`` (lossless, best for small synthetic images), else JPEG."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    mime = "image/png"
    if buffer.tell() > max_bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"
