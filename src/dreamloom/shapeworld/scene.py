"""Scenes: the ground truth of a ShapeWorld image, its caption, and seeded sampling."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from dreamloom.shapeworld.vocab import (
    BACKGROUND_COLOURS,
    OBJECT_COLOURS,
    RELATIONS,
    REFERENCE_RESOLUTION,
    SHAPES,
    SIZES,
)


@dataclass(frozen=True)
class ShapeObject:
    """One object: what it is and where its bounding-box centre lies (pixels)."""

    shape: str
    colour: str
    size: str
    cx: float = 0.0
    cy: float = 0.0

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"



@dataclass(frozen=True)
class Scene:
    """A whole image's ground truth; ``relation`` links objects[0] to objects[1]."""

    objects: tuple[ShapeObject, ...]
    background: str
    relation: str | None = None
    resolution: int = REFERENCE_RESOLUTION
    meta: dict = field(default_factory=dict, compare=False)

    def caption(self) -> str:
        """The exact English caption: every object, its size and colour, and the relation."""
        phrases = [o.phrase() for o in self.objects]
        if self.relation is not None:
            body = f"{phrases[0]} {self.relation} {phrases[1]}"
        elif len(phrases) == 1:
            body = phrases[0]
        else:
            body = ", ".join(phrases[:-1]) + " and " + phrases[-1]
        article = "an" if self.background[0] in "aeiou" else "a"
        return f"{body} on {article} {self.background} background"

    def to_dict(self) -> dict:
        return asdict(self)


def _fits(box: tuple[float, float, float, float], others: list[tuple[float, float, float, float]], gap: float) -> bool:
    x0, y0, x1, y1 = box
    return all(x1 + gap <= a0 or a1 + gap <= x0 or y1 + gap <= b0 or b1 + gap <= y0 for a0, b0, a1, b1 in others)


def _box(cx: float, cy: float, extent: float) -> tuple[float, float, float, float]:
    h = extent / 2
    return (cx - h, cy - h, cx + h, cy + h)


def _relation_holds(a: ShapeObject, b: ShapeObject, relation: str, extent_a: float, extent_b: float) -> bool:
    """True when a and b are separated along the relation's axis, in its direction, and
    that axis dominates, so a reader (or the scorer) cannot take it for another relation."""
    axis, sign = RELATIONS[relation]
    pa, pb = (a.cx, a.cy), (b.cx, b.cy)
    delta = (pb[axis] - pa[axis]) * -sign
    other = abs(pb[1 - axis] - pa[1 - axis])
    return delta >= (extent_a + extent_b) / 2 + 2 and delta > other * 1.5


def sample_scene(rng: random.Random, n_objects: int | None = None, resolution: int = REFERENCE_RESOLUTION) -> Scene:
    """Draw one scene. One object 40%, two (with a relation) 40%, three 20% by default."""
    if n_objects is None:
        n_objects = rng.choices((1, 2, 3), weights=(0.4, 0.4, 0.2))[0]
    scale = resolution / REFERENCE_RESOLUTION
    margin = 2 * scale
    while True:
        kinds = [(rng.choice(SHAPES), rng.choice(list(OBJECT_COLOURS)), rng.choice(list(SIZES))) for _ in range(n_objects)]
        used = {c for _, c, _ in kinds}
        background = rng.choice([c for c in BACKGROUND_COLOURS if c not in used])
        relation = rng.choice(list(RELATIONS)) if n_objects == 2 else None
        placed: list[ShapeObject] = []
        boxes: list[tuple[float, float, float, float]] = []
        for shape, colour, size in kinds:
            extent = SIZES[size] * scale
            for _ in range(50):
                lo, hi = extent / 2 + margin, resolution - extent / 2 - margin
                cx, cy = rng.uniform(lo, hi), rng.uniform(lo, hi)
                box = _box(cx, cy, extent)
                if not _fits(box, boxes, 3 * scale):
                    continue
                candidate = ShapeObject(shape, colour, size, round(cx, 2), round(cy, 2))
                if relation and placed and not _relation_holds(
                    placed[0], candidate, relation, SIZES[placed[0].size] * scale, extent
                ):
                    continue
                placed.append(candidate)
                boxes.append(box)
                break
            else:
                break
        if len(placed) == n_objects:
            return Scene(tuple(placed), background, relation, resolution)


def sample_scenes(seed: int, count: int, n_objects: int | None = None, resolution: int = REFERENCE_RESOLUTION) -> list[Scene]:
    """``count`` scenes from one seed: the same seed always gives the same list."""
    rng = random.Random(seed)
    return [sample_scene(rng, n_objects, resolution) for _ in range(count)]
