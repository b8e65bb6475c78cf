"""Small image helpers shared by generation, training, evaluation and every front end: the one
decoder for images that arrive from outside (pixels capped before decoding), and grids."""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Sequence

from PIL import Image, UnidentifiedImageError

#: Most pixels an image from outside may have unless the caller sets its own cap (about
#: 8000x5000): a decoded 100 MP image alone takes 300 MB, and none of dreamloom's models
#: looks at one whole.
MAX_PIXELS = 40_000_000
# PIL's own guard (a warning past MAX_IMAGE_PIXELS, an error past twice it) also covers decoders
# dreamloom does not call itself (Gradio's uploads); at our cap, our own check (which names the
# size) still runs first for anything up to twice it.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f}" if pixels >= 10_000_000 else f"{pixels / 1e6:.1f}"


def check_size(image: Image.Image, what: str = "the image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``image`` itself, or a ValueError naming its size when it has more than ``max_pixels``
    (read from the header: call it before ``load()``)."""
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(f"{what} is {width}x{height} = {width * height / 1e6:.1f} MP, over the limit of "
                         f"{_megapixels(max_pixels)} MP; downscale it first")
    if width == 0 or height == 0:
        raise ValueError(f"{what} is empty ({width}x{height})")
    return image


def decode_image(raw: bytes, what: str = "the image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image encoded in ``raw`` (any format PIL reads), its size checked before its pixels
    are decoded, in RGB, RGBA or L; a ValueError naming ``what`` otherwise. The PNG text chunks
    (an infotext) stay in ``image.info``."""
    try:
        image = Image.open(io.BytesIO(raw))
    except UnidentifiedImageError:
        raise ValueError(f"{what} is not an image (no format PIL reads: PNG, JPEG, WebP, ...)") from None
    except Image.DecompressionBombError:
        raise ValueError(f"{what} is over the limit of {_megapixels(max_pixels)} MP (PIL refuses it as a "
                         "decompression bomb); downscale it first") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{what} is not a readable image ({type(error).__name__}: {error})") from None
    with image:
        check_size(image, what, max_pixels)
        try:
            image.load()
            return _normalized(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"{what} is not a readable image ({type(error).__name__}: {error})") from None


def _normalized(image: Image.Image) -> Image.Image:
    """``image`` in a mode every consumer handles: RGB, RGBA (when it has transparency) or L (a
    mask); CMYK JPEGs, float or 16-bit TIFFs, palettes are converted, keeping ``info``."""
    if image.mode in ("RGB", "RGBA", "L"):
        return image.copy()
    if "A" in image.getbands() or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


def decode_base64_image(data: str, what: str = "the image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image in a base64 string, with or without a ``data:image/...;base64,`` prefix."""
    if not data or not data.strip():
        raise ValueError(f"{what} is empty: send a base64-encoded PNG or JPEG")
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data.strip(), validate=False)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None
    return decode_image(raw, what, max_pixels)


def make_grid(images: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """Tile equally sized images row by row, as AUTOMATIC1111's grids do."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    w, h = images[0].size
    grid = Image.new("RGB", (columns * w, rows * h))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * w, (i // columns) * h))
    return grid
