"""Images into a vision model and out to a provider: opened with a clear error when they are
not images or are too large, and re-encoded small enough for remote endpoints."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

#: An image as callers hold it: a PIL image, a file path, raw bytes, or a ``data:`` URL.
ImageInput = Image.Image | Path | str | bytes
#: Most pixels an input image may have (about 8000x5000). Larger is refused before decoding,
#: since a decoded 100 MP image alone takes 300 MB and no vision model looks at it whole.
MAX_PIXELS = 40_000_000
#: Longest side sent to a remote provider; OpenAI and most Llama 4 hosts rescale beyond it anyway.
REMOTE_MAX_SIDE = 1024
#: Largest encoded image sent to a provider before falling back from PNG to JPEG.
REMOTE_MAX_BYTES = 4 * 2**20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _decode(raw: bytes, what: str, max_pixels: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(raw)) as image:
            check_size(image, what, max_pixels)
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"{what} is not an image (no format PIL reads: PNG, JPEG, WebP, ...)") from None
    except Image.DecompressionBombError:
        raise ValueError(f"{what} is over the limit of {max_pixels / 1e6:.0f} MP (PIL refuses it as a "
                         "decompression bomb); downscale it first") from None
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{what} is not a readable image ({type(error).__name__}: {error})") from None


def check_size(image: Image.Image, what: str = "the image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``image`` itself, or a ValueError naming its size when it has more than ``max_pixels``."""
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(f"{what} is {width}x{height} = {width * height / 1e6:.1f} MP, over the limit of "
                         f"{max_pixels / 1e6:.0f} MP; downscale it first")
    if width == 0 or height == 0:
        raise ValueError(f"{what} is empty ({width}x{height})")
    return image


def decode_data_url(url: str, what: str = "the image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image in a ``data:image/...;base64,...`` URL."""
    header, sep, payload = url.partition(",")
    if not url.startswith("data:") or not sep or ";base64" not in header:
        raise ValueError(f"{what} must be a data:image/...;base64,... URL")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: the data URL's base64 payload does not decode") from None
    return _decode(raw, what, max_pixels)


def load_image(source: ImageInput, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``source`` as an RGB image: a PIL image, a path, encoded bytes, or a ``data:`` URL. A
    ValueError (FileNotFoundError for a missing file) names what is wrong."""
    if isinstance(source, Image.Image):
        return check_size(source, max_pixels=max_pixels).convert("RGB")
    if isinstance(source, bytes):
        return _decode(source, "the image data", max_pixels)
    if isinstance(source, str) and source.startswith("data:"):
        return decode_data_url(source, max_pixels=max_pixels)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    return _decode(path.read_bytes(), str(path), max_pixels)


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
