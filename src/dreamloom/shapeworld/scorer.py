"""ShapeWorld's prompt-adherence metric: read an image back and check it against a prompt.

No neural network: pixels are snapped to the nearest palette colour, each colour's
mask is opened (removing anti-aliasing fringes) and split into connected components,
and each component's shape is classified from two scale-free features, fill ratio
(area / bounding box) and solidity (area / convex hull), against prototypes measured
on the renderer's own shapes at import time. The same code therefore scores ground
truth images, VAE reconstructions and generated samples.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from dreamloom.shapeworld.grammar import ObjectSpec, PromptSpec, parse_prompt
from dreamloom.shapeworld.scene import Scene, ShapeObject
from dreamloom.shapeworld.render import render_array
from dreamloom.shapeworld.vocab import (
    BACKGROUND_COLOURS,
    OBJECT_COLOURS,
    RELATIONS,
    REFERENCE_RESOLUTION,
    SHAPES,
    SIZES,
)

_PALETTE_NAMES = list(BACKGROUND_COLOURS)
_PALETTE = np.array([BACKGROUND_COLOURS[n] for n in _PALETTE_NAMES], dtype=np.float32)
#: A pixel farther than this (RGB euclidean) from every palette colour belongs to none.
_MAX_COLOUR_DISTANCE = 90.0
#: The background must cover at least this share of the image to count.
_MIN_BACKGROUND_SHARE = 0.25
_MIN_AREA = 20
#: A component whose features lie farther than this from every prototype is "unknown".
_MAX_SHAPE_DISTANCE = 0.16


@dataclass(frozen=True)
class Detection:
    colour: str
    shape: str
    size: str
    cx: float
    cy: float
    area: int


@dataclass
class ImageReading:
    """Everything the scorer saw in an image."""

    background: str | None
    objects: list[Detection]


@dataclass
class ObjectCheck:
    asked: ObjectSpec
    found: Detection | None
    colour: bool
    shape: bool
    size: bool | None


@dataclass
class Adherence:
    """How well an image follows a prompt; ``correct`` is the strict per-image verdict."""

    prompt: str
    objects: list[ObjectCheck]
    background: bool | None
    relation: bool | None
    count: bool
    reading: ImageReading = field(repr=False)

    @property
    def correct(self) -> bool:
        """Every asked object present with its colour and shape, background and relation right."""
        return (
            all(o.colour and o.shape for o in self.objects)
            and self.background is not False
            and self.relation is not False
        )

    @property
    def checks(self) -> dict[str, bool]:
        """Every individual yes/no check, by name; the basis of ``score``."""
        out: dict[str, bool] = {}
        for i, o in enumerate(self.objects):
            out[f"object{i}.colour"] = o.colour
            out[f"object{i}.shape"] = o.shape
            if o.size is not None:
                out[f"object{i}.size"] = o.size
        if self.background is not None:
            out["background"] = self.background
        if self.relation is not None:
            out["relation"] = self.relation
        out["count"] = self.count
        return out

    @property
    def score(self) -> float:
        checks = self.checks
        return sum(checks.values()) / len(checks)

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "correct": self.correct,
            "score": self.score,
            "checks": self.checks,
            "reading": asdict(self.reading),
        }


def _to_reference(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    image = image.convert("RGB")
    if image.size != (REFERENCE_RESOLUTION, REFERENCE_RESOLUTION):
        image = image.resize((REFERENCE_RESOLUTION, REFERENCE_RESOLUTION), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _features(mask: np.ndarray) -> tuple[float, float, int] | None:
    ys, xs = np.nonzero(mask)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    area = len(xs)
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    corners = np.concatenate([points + d for d in ((0, 0), (1, 0), (0, 1), (1, 1))])
    try:
        hull_area = ConvexHull(corners).volume
    except QhullError:
        return None
    return area / (h * w), area / hull_area, int(max(h, w))


def _segment(pixels: np.ndarray) -> tuple[str | None, list[tuple[str, np.ndarray]]]:
    """Background colour name and the cleaned connected components of every other colour."""
    distances = np.linalg.norm(pixels[:, :, None, :] - _PALETTE[None, None], axis=-1)
    labels = distances.argmin(-1)
    labels[distances.min(-1) > _MAX_COLOUR_DISTANCE] = -1
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(_PALETTE_NAMES))
    top = int(counts.argmax())
    background = _PALETTE_NAMES[top] if counts[top] >= _MIN_BACKGROUND_SHARE * labels.size else None
    components = []
    for index, name in enumerate(_PALETTE_NAMES):
        if name == background or name not in OBJECT_COLOURS or counts[index] < _MIN_AREA:
            continue
        mask = ndimage.binary_opening(labels == index, structure=ndimage.generate_binary_structure(2, 1))
        blobs, n = ndimage.label(mask)
        for k in range(1, n + 1):
            component = blobs == k
            if component.sum() >= _MIN_AREA:
                components.append((name, component))
    return background, components


@lru_cache(maxsize=1)
def _prototypes() -> tuple[np.ndarray, list[str], float]:
    """Feature prototypes per shape, measured on clean renders of every shape and size,
    and the extent threshold between "small" and "large"."""
    feats, names, extents = [], [], {s: [] for s in SIZES}
    for shape in SHAPES:
        for size in SIZES:
            for offset in (0.0, 0.25, 0.5):
                scene = Scene((ShapeObject(shape, "red", size, 32 + offset, 32 + offset),), "white")
                _, components = _segment(render_array(scene).astype(np.float32))
                fill, solidity, extent = _features(components[0][1])
                feats.append((fill, solidity))
                names.append(shape)
                extents[size].append(extent)
    small, large = max(extents["small"]), min(extents["large"])
    return np.array(feats), names, (small + large) / 2


def read_image(image: Image.Image | np.ndarray) -> ImageReading:
    """Detect background and objects in any RGB image (resized to 64x64 first)."""
    prototypes, names, size_threshold = _prototypes()
    background, components = _segment(_to_reference(image))
    detections = []
    for colour, mask in components:
        features = _features(mask)
        if features is None:
            continue
        fill, solidity, extent = features
        distance = np.linalg.norm(prototypes - np.array([fill, solidity]), axis=1)
        shape = names[int(distance.argmin())] if distance.min() <= _MAX_SHAPE_DISTANCE else "unknown"
        ys, xs = np.nonzero(mask)
        size = "large" if extent > size_threshold else "small"
        detections.append(Detection(colour, shape, size, float(xs.mean()), float(ys.mean()), int(mask.sum())))
    detections.sort(key=lambda d: -d.area)
    return ImageReading(background, detections[:6])


def _match_score(asked: ObjectSpec, found: Detection | None) -> float:
    if found is None:
        return 0.0
    return 2.0 * (asked.colour in (None, found.colour)) + (asked.shape == found.shape) + 0.5 * (asked.size in (None, found.size))


def _relation_holds(relation: str, a: Detection, b: Detection) -> bool:
    axis, sign = RELATIONS[relation]
    pa, pb = (a.cx, a.cy), (b.cx, b.cy)
    delta = (pb[axis] - pa[axis]) * -sign
    return delta > 0 and delta >= 0.5 * abs(pb[1 - axis] - pa[1 - axis])


def score_image(image: Image.Image | np.ndarray, prompt: str | PromptSpec) -> Adherence:
    """Check ``image`` against ``prompt`` (text in ShapeWorld's grammar, or a parsed spec)."""
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    reading = read_image(image)
    candidates: list[Detection | None] = list(reading.objects) + [None] * len(spec.objects)

    def assignment_score(assigned: tuple[Detection | None, ...]) -> float:
        total = sum(_match_score(a, f) for a, f in zip(spec.objects, assigned))
        if spec.relation is not None and None not in assigned[:2]:
            total += 0.1 * _relation_holds(spec.relation, assigned[0], assigned[1])
        return total

    best = max(itertools.permutations(candidates, len(spec.objects)), key=assignment_score, default=())
    checks = [
        ObjectCheck(
            asked=a,
            found=f,
            colour=f is not None and a.colour in (None, f.colour),
            shape=f is not None and a.shape == f.shape,
            size=None if a.size is None else (f is not None and a.size == f.size),
        )
        for a, f in zip(spec.objects, best)
    ]
    relation = None
    if spec.relation is not None:
        a, b = best[0], best[1]
        relation = a is not None and b is not None and _relation_holds(spec.relation, a, b)
    background = None if spec.background is None else reading.background == spec.background
    return Adherence(
        prompt=prompt if isinstance(prompt, str) else "",
        objects=checks,
        background=background,
        relation=relation,
        count=len(reading.objects) == len(spec.objects),
        reading=reading,
    )
