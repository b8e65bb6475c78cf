"""Draw a scene as an RGB image, anti-aliased by supersampling."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from dreamloom.shapeworld.scene import Scene
from dreamloom.shapeworld.vocab import BACKGROUND_COLOURS, OBJECT_COLOURS, REFERENCE_RESOLUTION, SIZES

#: Shapes are drawn this many times larger and box-downsampled (anti-aliasing).
SUPERSAMPLE = 4


def shape_polygon(shape: str, cx: float, cy: float, extent: float) -> list[tuple[float, float]] | None:
    """Vertices of an upright shape filling an ``extent``-sided box; None for a circle."""
    h = extent / 2
    if shape == "square":
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "star":
        points = []
        for k in range(10):
            r = h if k % 2 == 0 else h * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + r * math.cos(angle), cy + h * 0.1 + r * math.sin(angle)))
        return points
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, extent: float, fill: object) -> None:
    """Fill one upright shape on ``draw``'s canvas; coordinates are that canvas's pixels."""
    polygon = shape_polygon(shape, cx, cy, extent)
    if polygon is None:
        h = extent / 2
        draw.ellipse((cx - h, cy - h, cx + h, cy + h), fill=fill)
    else:
        draw.polygon(polygon, fill=fill)


def render(scene: Scene) -> Image.Image:
    """Render ``scene`` at its resolution; shapes are drawn 4x larger and downsampled."""
    s = SUPERSAMPLE
    size = scene.resolution * s
    scale = scene.resolution / REFERENCE_RESOLUTION
    image = Image.new("RGB", (size, size), BACKGROUND_COLOURS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        extent = SIZES[obj.size] * scale * s
        cx, cy = obj.cx * s, obj.cy * s
        draw_shape(draw, obj.shape, cx, cy, extent, OBJECT_COLOURS[obj.colour])
    return image.resize((scene.resolution, scene.resolution), Image.Resampling.BOX)


def render_array(scene: Scene) -> np.ndarray:
    """``render`` as an HxWx3 uint8 array."""
    return np.asarray(render(scene))
