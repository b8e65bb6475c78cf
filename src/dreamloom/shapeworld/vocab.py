"""The closed vocabulary of ShapeWorld: colours, shapes, sizes and relations.

Every other ShapeWorld module (renderer, caption grammar, scorer) reads its words and
numbers from here, so the data set and the metric can never disagree about what
"purple" or "large" means.
"""

from __future__ import annotations

#: Object colours, chosen far apart in RGB so a colour survives blur and a VAE.
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (245, 230, 40),
    "green": (30, 170, 60),
    "blue": (30, 80, 230),
    "purple": (150, 50, 200),
}

#: Background colours: every object colour plus two neutrals.
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    **OBJECT_COLOURS,
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")

#: Extent (bounding-box side) in pixels at the 64x64 reference resolution.
SIZES: dict[str, int] = {"small": 20, "large": 32}

#: Spatial relations for two-object scenes: name -> (axis, sign).
#: axis 0 is x (columns), axis 1 is y (rows); sign -1 means "smaller coordinate".
RELATIONS: dict[str, tuple[int, int]] = {
    "left of": (0, -1),
    "right of": (0, 1),
    "above": (1, -1),
    "below": (1, 1),
}

REFERENCE_RESOLUTION = 64
