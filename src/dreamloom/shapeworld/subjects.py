"""ShapeWorld subjects for DreamBooth personalization, and an exact detector for them.

DreamBooth (Ruiz et al. 2022, "DreamBooth: Fine Tuning Text-to-Image Diffusion Models for
Subject-Driven Generation") teaches a model one *subject* from a few instance images, bound
to a rare identifier beside a class noun the model knows ("a sks star"). A subject here is a
ShapeWorld shape painted in two colours, which ordinary ShapeWorld data never shows (a star
of blue and yellow stripes, a blue|orange ring), so both of the paper's measures can be read
without a neural network:

* subject fidelity (the paper's DINO / CLIP-I): ``detect_subject``;
* prompt fidelity (the paper's CLIP-T): ``context_checks``, i.e. ShapeWorld's scorer on the
  context a ``ContextPrompt`` asks for, plus the subject's size read by the detector.

The patterns are coarse on purpose: the tiny model's VAE (an 8x8 latent at 64 px) smears
3-4 px stripes into one colour, and a subject its decoder cannot draw cannot be learnt;
every subject here survives a VAE round trip (tests/test_subjects.py).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from dreamloom.shapeworld.grammar import ObjectSpec
from dreamloom.shapeworld.render import SUPERSAMPLE, draw_shape, render_array
from dreamloom.shapeworld.scene import Scene, ShapeObject
from dreamloom.shapeworld.scorer import score_image
from dreamloom.shapeworld.vocab import BACKGROUND_COLOURS, OBJECT_COLOURS, REFERENCE_RESOLUTION, RELATIONS, SHAPES, SIZES

Pattern = Literal["stripes", "halves", "dot"]

#: Stripe width and dot radius, as fractions of the subject's extent.
_STRIPE_WIDTH = 1 / 3
_DOT_RADIUS = 0.25
#: Extents (reference pixels) a subject may be drawn at.
MIN_EXTENT, MAX_EXTENT = 20.0, 36.0
#: Colours closer than this (RGB euclidean) count as one.
_DISTINCT = 60.0
#: Detector: smallest component looked at; distance beyond which a pixel is no colour of
#: the subject's; template coverage that makes a pixel comparable; depth of a colour's
#: core (pixels from its boundary); the verdict's threshold on the score.
_MIN_AREA = 40
_MAX_COLOUR_DISTANCE = 90.0
_PURE = 0.9
_CORE_DEPTH = 2.0
DETECTION_THRESHOLD = 0.5
#: Where a downsampled pixel's centre lies in the renderer's coordinates (PIL puts pixel i at i).
_PIXEL_CENTRE = (SUPERSAMPLE - 1) / (2 * SUPERSAMPLE)


@dataclass(frozen=True)
class Subject:
    """A ShapeWorld shape (``class_noun``) painted in two ShapeWorld object colours.

    ``pattern`` lays out ``colours``: "stripes" are horizontal bands of ``extent / 3`` from
    the top (first, second, first); "halves" paint the left half in the first colour and the
    right half in the second; "dot" paints the body in the first with a centred dot of
    radius ``extent / 4`` in the second. ``hole`` (a fraction of the outer radius) cuts a
    round hole that shows the background.
    """

    name: str
    class_noun: str
    description: str
    colours: tuple[str, str]
    pattern: Pattern
    hole: float = 0.0

    def __post_init__(self) -> None:
        if self.class_noun not in SHAPES or not set(self.colours) <= set(OBJECT_COLOURS):
            raise ValueError(f"subject {self.name!r}: class noun must be one of {SHAPES}, colours from OBJECT_COLOURS")


SUBJECTS: dict[str, Subject] = {
    s.name: s
    for s in (
        Subject("striped-star", "star", "a star of horizontal stripes: blue, yellow, blue", ("blue", "yellow"), "stripes"),
        Subject("two-tone-ring", "circle", "a ring, left half blue, right half orange", ("blue", "orange"), "halves", 0.5),
        Subject("dotted-square", "square", "a purple square with a big yellow dot in the middle", ("purple", "yellow"), "dot"),
    )
}


def get_subject(name: str) -> Subject:
    """The subject called ``name``; a ValueError names the known ones."""
    if name not in SUBJECTS:
        raise ValueError(f"unknown subject {name!r}; known subjects: {', '.join(SUBJECTS)}")
    return SUBJECTS[name]


def _subject_colours(subject: Subject) -> np.ndarray:
    return np.array([OBJECT_COLOURS[c] for c in subject.colours], dtype=np.float64)


def _pattern(subject: Subject, dx: np.ndarray, dy: np.ndarray, extent: float) -> np.ndarray:
    """Colour index (1 = first colour, 2 = second) at offsets ``dx, dy`` from the subject's centre."""
    if subject.pattern == "stripes":
        return 1 + np.floor((dy / extent + 0.5) / _STRIPE_WIDTH).astype(int) % 2
    if subject.pattern == "halves":
        return np.where(dx < 0, 1, 2)
    return np.where(np.hypot(dx, dy) <= extent * _DOT_RADIUS, 2, 1)


def _coverage(subject: Subject, cx: float, cy: float, extent: float, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel coverage of (background, first colour, second colour), HxWx3, and of the
    filled outline, HxW; drawn ``SUPERSAMPLE`` times larger and box-averaged like ``render``,
    only inside the subject's box. ``cx, cy, extent`` are in output pixels."""
    s, reach = SUPERSAMPLE, extent / 2 + 1
    x0, y0 = max(int(cx - reach), 0), max(int(cy - reach), 0)
    x1, y1 = min(int(cx + reach) + 2, resolution), min(int(cy + reach) + 2, resolution)
    canvas = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw_shape(ImageDraw.Draw(canvas), subject.class_noun, (cx - x0) * s, (cy - y0) * s, extent * s, 1)
    outline = np.asarray(canvas, dtype=bool)
    y, x = np.mgrid[y0 * s : y1 * s, x0 * s : x1 * s] / s
    index = np.where(outline, _pattern(subject, x - cx, y - cy, extent), 0)
    if subject.hole:
        index[np.hypot(x - cx, y - cy) < subject.hole * extent / 2] = 0
    layers = np.stack([index == k for k in range(3)] + [outline], axis=-1).astype(np.float32)
    window = np.zeros((resolution, resolution, 4), dtype=np.float32)
    window[..., 0] = 1.0
    window[y0:y1, x0:x1] = layers.reshape(y1 - y0, s, x1 - x0, s, 4).mean(axis=(1, 3))
    return window[..., :3], window[..., 3]


def render_subject_scene(
    subject: Subject,
    cx: float,
    cy: float,
    extent: float,
    background: str,
    others: tuple[ShapeObject, ...] = (),
    resolution: int = REFERENCE_RESOLUTION,
) -> Image.Image:
    """Render ``subject`` centred at ``cx, cy`` (output pixels, like ``ShapeObject``) with
    ``extent`` (reference pixels, scaled like ``SIZES``) over the ordinary ``others`` on
    ``background``; the subject is drawn last, over whatever lies under it."""
    if not MIN_EXTENT <= extent <= MAX_EXTENT:
        raise ValueError(f"extent {extent} outside [{MIN_EXTENT}, {MAX_EXTENT}]")
    base = render_array(Scene(tuple(others), background, resolution=resolution)).astype(np.float64)
    coverage, _ = _coverage(subject, cx, cy, extent * resolution / REFERENCE_RESOLUTION, resolution)
    pixels = coverage[..., :1] * base + coverage[..., 1:] @ _subject_colours(subject)
    return Image.fromarray(np.rint(pixels).astype(np.uint8))


def _blend(subject: Subject) -> np.ndarray:
    """The colour a blurred boundary between the subject's two colours shows."""
    return _subject_colours(subject).mean(axis=0)


def visible_backgrounds(subject: Subject) -> list[str]:
    """Backgrounds the subject stays visible on: none near its colours or their blend (red
    and yellow stripes would blur into orange and vanish on an orange background)."""
    avoid = np.concatenate([_subject_colours(subject), _blend(subject)[None]])
    return [n for n, c in BACKGROUND_COLOURS.items() if np.linalg.norm(avoid - c, axis=-1).min() > _DISTINCT]


def _instance_placements(subject: Subject) -> list[tuple[float, float, float, str]]:
    """Centre, extent and background of each instance image, seeded by the subject's name."""
    rng = random.Random(subject.name)
    placements = []
    for background in rng.sample(visible_backgrounds(subject), 5):
        extent = round(rng.uniform(22, 34), 2)
        lo, hi = extent / 2 + 2, REFERENCE_RESOLUTION - extent / 2 - 2
        placements.append((round(rng.uniform(lo, hi), 2), round(rng.uniform(lo, hi), 2), extent, background))
    return placements


def instance_images(subject: Subject) -> list[Image.Image]:
    """The 5 DreamBooth instance images: the subject alone at seeded positions, extents
    (22-34 px) and distinct backgrounds; the same subject always gives the same images."""
    return [render_subject_scene(subject, cx, cy, extent, bg) for cx, cy, extent, bg in _instance_placements(subject)]


def instance_captions(subject: Subject, identifier: str = "sks") -> list[str]:
    """A caption per instance image naming its background ("a sks star on a green
    background"), so training binds the identifier to the subject, not to a background."""
    return [f"a {identifier} {subject.class_noun} on {'an' if bg[0] in 'aeiou' else 'a'} {bg} background"
            for *_, bg in _instance_placements(subject)]


def write_instance_images(folder: Path) -> None:
    """Write each subject's instance images and captions to ``folder/<name>/00.png`` (and
    ``00.txt``, kohya's caption convention) ... ``04.png``; the shipped ones are
    ``write_instance_images(Path("src/dreamloom/assets/subjects"))``."""
    for subject in SUBJECTS.values():
        (folder / subject.name).mkdir(parents=True, exist_ok=True)
        for i, (image, caption) in enumerate(zip(instance_images(subject), instance_captions(subject))):
            image.save(folder / subject.name / f"{i:02d}.png")
            (folder / subject.name / f"{i:02d}.txt").write_text(caption + "\n")


def instance_dir(name: str) -> Path:
    """The shipped folder of subject ``name``'s instance images."""
    return Path(str(resources.files("dreamloom") / "assets" / "subjects" / get_subject(name).name))


@dataclass(frozen=True)
class ContextPrompt:
    """One evaluation prompt: the subject in a context (Ruiz et al. 2022, Sec. 4.1).

    ``prompt`` carries the identifier ("a sks star left of a small red square on a white
    background"); ``class_prompt`` is the same words without it, which ShapeWorld's parser
    reads as the class noun, of no colour, in the context. The other fields are the context
    facts the prompt asks for.
    """

    prompt: str
    class_prompt: str
    background: str
    neighbour: ObjectSpec | None = None
    relation: str | None = None
    subject_size: str | None = None

    @property
    def checks(self) -> tuple[str, ...]:
        """The prompt-fidelity checks: keys of the scorer's ``Adherence.checks`` on
        ``class_prompt`` about the context (never ``object0.*`` or ``count``: the scorer reads
        a two-colour subject as several pieces), and "subject.size", read by ``detect_subject``."""
        names = ["background"]
        if self.neighbour is not None:
            names += ["object1.colour", "object1.shape", "object1.size", "relation"]
        if self.subject_size is not None:
            names.append("subject.size")
        return tuple(names)


def _context_prompt(
    subject: Subject, identifier: str, background: str, neighbour: ObjectSpec | None, relation: str | None, size: str | None
) -> ContextPrompt:
    def sentence(token: str | None) -> str:
        text = " ".join(w for w in ("a", size, token, subject.class_noun) if w)
        if neighbour is not None:
            text += f" {relation} a {neighbour.size} {neighbour.colour} {neighbour.shape}"
        return f"{text} on {'an' if background[0] in 'aeiou' else 'a'} {background} background"

    return ContextPrompt(sentence(identifier), sentence(None), background, neighbour, relation, size)


def context_prompts(subject: Subject, identifier: str = "sks") -> list[ContextPrompt]:
    """The subject on each of its visible backgrounds (6 for every shipped subject), large
    or small (4 prompts), and in each relation to a small neighbour of another shape and
    colour (8); always the same list for the same subject and identifier."""
    backgrounds = visible_backgrounds(subject)
    colours = [c for c in OBJECT_COLOURS if c not in subject.colours]
    shapes = [s for s in SHAPES if s != subject.class_noun]
    contexts: list[tuple[str, ObjectSpec | None, str | None, str | None]] = [(b, None, None, None) for b in backgrounds]
    contexts += [(backgrounds[-1 - i], None, None, size) for i, size in enumerate(("large", "small", "small", "large"))]
    for i, relation in enumerate(list(RELATIONS) * 2):
        neighbour = ObjectSpec(shapes[i % len(shapes)], colours[i % len(colours)], "small")
        fitting = [b for b in backgrounds if b != neighbour.colour]
        contexts.append((fitting[i % len(fitting)], neighbour, relation, None))
    return [_context_prompt(subject, identifier, *context) for context in contexts]


#: The subject's extent per asked size, and where subject and neighbour stand per relation.
_CONTEXT_EXTENT = {"large": 32.0, "small": 20.0, None: 28.0}
_CONTEXT_PLACES = {
    None: ((32, 32), None),
    "left of": ((18, 32), (46, 32)),
    "right of": ((46, 32), (18, 32)),
    "above": ((32, 18), (32, 46)),
    "below": ((32, 46), (32, 18)),
}


def render_context(subject: Subject, context: ContextPrompt) -> Image.Image:
    """The exact picture of ``context``: what a perfect personalized model would draw, the
    ceiling of every DreamBooth measure."""
    (cx, cy), there = _CONTEXT_PLACES[context.relation]
    n = context.neighbour
    others = () if n is None else (ShapeObject(n.shape, n.colour, n.size, *there),)
    return render_subject_scene(subject, cx, cy, _CONTEXT_EXTENT[context.subject_size], context.background, others)


@dataclass(frozen=True)
class SubjectDetection:
    """The best candidate ``detect_subject`` saw: ``score`` in [0, 1], ``present`` when it
    reaches ``DETECTION_THRESHOLD``; centre and extent in reference pixels (None: no candidate)."""

    present: bool
    score: float
    cx: float | None = None
    cy: float | None = None
    extent: float | None = None


def _reference_pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    size = (REFERENCE_RESOLUTION, REFERENCE_RESOLUTION)
    return np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float64)


def _nearest(pixels: np.ndarray, colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of, and distance to, the nearest of ``colours`` per pixel."""
    distances = np.linalg.norm(pixels[..., None, :] - colours, axis=-1)
    return distances.argmin(-1), distances.min(-1)


def _background_colour(pixels: np.ndarray) -> np.ndarray:
    """The median of the border pixels nearest the most common palette colour among them."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    labels, _ = _nearest(border, np.array(list(BACKGROUND_COLOURS.values()), dtype=np.float64))
    return np.median(border[labels == np.bincount(labels).argmax()], axis=0)


def _foreground(pixels: np.ndarray, background: np.ndarray, subject: Subject) -> np.ndarray:
    """Pixels nearer some object colour, or the subject's blend, than the background."""
    colours = np.concatenate([np.array(list(OBJECT_COLOURS.values()), dtype=np.float64), _blend(subject)[None]])
    palette = np.concatenate([background[None], colours[np.linalg.norm(colours - background, axis=-1) > _DISTINCT]])
    return _nearest(pixels, palette)[0] != 0


def _read_colours(pixels: np.ndarray, background: np.ndarray, subject: Subject) -> np.ndarray:
    """Per pixel 0 (background), 1 (first colour), 2 (second) or -1 (none of them)."""
    index, distance = _nearest(pixels, np.concatenate([background[None], _subject_colours(subject)]))
    return np.where(distance > _MAX_COLOUR_DISTANCE, -1, index)


@lru_cache(maxsize=None)
def _outline_geometry(shape: str) -> tuple[float, float, float]:
    """Area / extent² and centroid offset / extent of ``shape`` as the renderer draws it."""
    extent, centre = 200.0, 128.0
    canvas = Image.new("L", (256, 256), 0)
    draw_shape(ImageDraw.Draw(canvas), shape, centre, centre, extent, 1)
    ys, xs = np.nonzero(np.asarray(canvas))
    return len(xs) / extent**2, (xs.mean() - centre) / extent, (ys.mean() - centre) / extent


def _fit(component: np.ndarray, shape: str) -> tuple[float, float, float]:
    """Centre and extent of the ``shape`` whose filled outline is ``component``, from area and centroid."""
    ys, xs = np.nonzero(ndimage.binary_fill_holes(component))
    fraction, ox, oy = _outline_geometry(shape)
    extent = math.sqrt(len(xs) / fraction)
    return float(xs.mean() + _PIXEL_CENTRE - ox * extent), float(ys.mean() + _PIXEL_CENTRE - oy * extent), extent


def _cores(coverage: np.ndarray, outline: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """For each colour class of a template (background in a hole, first, second), the pixels
    inside the outline that lie deepest in it, up to ``_CORE_DEPTH`` from any other class:
    blur and a VAE smear the boundaries, the cores keep their colour."""
    cores = []
    for k in range(3):
        region = (outline >= _PURE) & (coverage[..., k] >= _PURE)
        if np.count_nonzero(region) >= 2:
            depth = ndimage.distance_transform_edt(region)
            cores.append((k, depth >= min(_CORE_DEPTH, depth.max())))
    return cores


def _match(read: np.ndarray, component: np.ndarray, subject: Subject, fit: tuple[float, float, float]) -> float:
    """Pattern agreement (over the template's colour classes, the lowest share of core pixels
    read as that class's colour) times the IoU of the component and the template's outline."""
    coverage, outline = _coverage(subject, *fit, REFERENCE_RESOLUTION)
    recalls = [np.mean(read[core] == k) for k, core in _cores(coverage, outline)]
    silhouette = coverage[..., 1:].sum(-1) >= 0.5
    iou = np.count_nonzero(silhouette & component) / np.count_nonzero(silhouette | component)
    return float(min(recalls) * iou) if recalls else 0.0


def detect_subject(image: Image.Image | np.ndarray, subject: Subject) -> SubjectDetection:
    """Find ``subject`` in an RGB image (resized to 64x64): the background is the commonest
    border colour; each connected component of foreground pixels is fitted with the subject's
    outline and scored against the subject drawn there (``_match``). No neural network."""
    pixels = _reference_pixels(image)
    background = _background_colour(pixels)
    read = _read_colours(pixels, background, subject)
    labels, count = ndimage.label(_foreground(pixels, background, subject))
    best = SubjectDetection(False, 0.0)
    for component in (labels == k for k in range(1, count + 1)):
        if np.count_nonzero(component) < _MIN_AREA:
            continue
        fit = _fit(component, subject.class_noun)
        score = _match(read, component, subject, fit)
        if score > best.score:
            best = SubjectDetection(score >= DETECTION_THRESHOLD, score, *(round(v, 2) for v in fit))
    return best


def context_checks(image: Image.Image | np.ndarray, context: ContextPrompt, subject: Subject) -> dict[str, bool]:
    """Prompt fidelity of ``image`` for ``context``: a verdict for each name in ``context.checks``.
    "subject.size" holds when the subject is found and its extent reads as the asked size."""
    checks = score_image(image, context.class_prompt).checks
    verdicts = {name: checks[name] for name in context.checks if name != "subject.size"}
    if context.subject_size is not None:
        found = detect_subject(image, subject)
        large = found.present and found.extent >= sum(SIZES.values()) / 2
        verdicts["subject.size"] = found.present and ("large" if large else "small") == context.subject_size
    return verdicts
