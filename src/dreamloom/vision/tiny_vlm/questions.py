"""Questions with exact answers, read off a ShapeWorld scene's ground truth.

Every answer is one short phrase the scene determines: a colour, a shape, a size, a
number word, "yes"/"no", a region of the image, or (for "Describe the image.") the
scene's caption in ShapeWorld's grammar. Objects are named by the shortest description
that picks out one of them ("the circle", "the red circle", "the small red circle"), so
no question is ambiguous; a question that cannot be asked of a scene is not asked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from dreamloom.shapeworld import Scene, ShapeObject
from dreamloom.shapeworld.vocab import OBJECT_COLOURS, REFERENCE_RESOLUTION, RELATIONS, SHAPES, SIZES

KINDS: tuple[str, ...] = ("caption", "colour", "shape", "size", "count", "background", "relation", "position", "exists")
CAPTION_PROMPT = "Describe the image."
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three")
#: Words of the questions and answers beyond ShapeWorld's caption vocabulary (the tokenizer's too).
QUESTION_WORDS: tuple[str, ...] = (
    "describe", "the", "image", "what", "colour", "is", "shape", "size", "object", "how", "many", "shapes", "are",
    "there", "where", "yes", "no", *NUMBERS, "top", "bottom", "centre", "left", "right",
)
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
#: Canonical captions name the first object so that these relations hold (the other two are their inverses).
_CANONICAL = ("left of", "above")


@dataclass(frozen=True)
class Question:
    """One question about one image, its exact answer, and which measure it counts for."""

    kind: str
    text: str
    answer: str


def canonical_scene(scene: Scene) -> Scene:
    """The same scene described in one fixed order: a two-object relation always as "left of"
    or "above" (objects swapped when needed), three objects from left to right.

    An image does not show which object the sampler drew first, so a caption in sampling
    order could not be learned; any of its orderings is an exact caption of the scene."""
    objects = scene.objects
    if scene.relation is not None and scene.relation not in _CANONICAL:
        return replace(scene, objects=(objects[1], objects[0], *objects[2:]), relation=_INVERSE[scene.relation])
    if scene.relation is None and len(objects) > 1:
        return replace(scene, objects=tuple(sorted(objects, key=lambda o: (o.cx, o.cy))))
    return scene


def relation_between(a: ShapeObject, b: ShapeObject, scale: float = 1.0) -> str | None:
    """The relation "a <relation> b" by ShapeWorld's rule (separated along one axis, which
    dominates the other 1.5 to 1), or None when the pair is too diagonal or too close to say.
    ``scale``: the image's resolution over ShapeWorld's 64-pixel reference."""
    extent = (SIZES[a.size] + SIZES[b.size]) / 2 * scale
    for name, (axis, sign) in RELATIONS.items():
        pa, pb = (a.cx, a.cy), (b.cx, b.cy)
        delta = (pb[axis] - pa[axis]) * -sign
        if delta >= extent + 2 and delta > abs(pb[1 - axis] - pa[1 - axis]) * 1.5:
            return name
    return None


def region(obj: ShapeObject, resolution: int) -> str:
    """Where ``obj``'s centre lies on a 3x3 grid: "top left", "top", ..., "centre", ..., "bottom right"."""
    third = resolution / 3
    row = ("top", "", "bottom")[min(2, int(obj.cy // third))]
    column = ("left", "", "right")[min(2, int(obj.cx // third))]
    return " ".join(part for part in (row, column) if part) or "centre"


def _reference(obj: ShapeObject, objects: tuple[ShapeObject, ...], without: str = "") -> str | None:
    """The shortest phrase naming ``obj`` and no other object, not using attribute ``without``."""
    orders = [("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape")]
    if without == "shape":
        orders = [("colour",), ("size",), ("size", "colour")]
    for attrs in orders:
        if without in attrs:
            continue
        key = [getattr(obj, a) for a in attrs]
        if sum([getattr(o, a) for a in attrs] == key for o in objects) == 1:
            return " ".join(key) + (" object" if without == "shape" else "")
    return None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _about_one_object(scene: Scene, kind: str, rng: random.Random) -> Question | None:
    """A colour, shape, size or position question about one object that can be named."""
    without = {"colour": "colour", "shape": "shape", "size": "size", "position": ""}[kind]
    named = [(o, ref) for o in scene.objects if (ref := _reference(o, scene.objects, without))]
    if not named:
        return None
    obj, ref = rng.choice(named)
    if kind == "position":
        return Question(kind, f"Where is the {ref}?", region(obj, scene.resolution))
    return Question(kind, f"What {kind} is the {ref}?", getattr(obj, kind))


def _count(scene: Scene, rng: random.Random) -> Question:
    what = rng.choice(("all", "shape", "colour"))
    if what == "shape":
        shape = rng.choice(SHAPES)
        return Question("count", f"How many {shape}s are there?", NUMBERS[sum(o.shape == shape for o in scene.objects)])
    if what == "colour":
        colour = rng.choice(list(OBJECT_COLOURS))
        count = sum(o.colour == colour for o in scene.objects)
        return Question("count", f"How many {colour} shapes are there?", NUMBERS[count])
    return Question("count", "How many shapes are there?", NUMBERS[len(scene.objects)])


def _relation(scene: Scene, rng: random.Random) -> Question | None:
    """"Is the A <relation> the B?": yes or no with equal odds; a "no" asks the inverse or a
    perpendicular relation, both false by ShapeWorld's rule."""
    pairs = [(a, b, rel) for a in scene.objects for b in scene.objects
             if a is not b and (rel := relation_between(a, b, scene.resolution / REFERENCE_RESOLUTION)) and _reference(a, scene.objects) and _reference(b, scene.objects)]
    if not pairs:
        return None
    a, b, rel = rng.choice(pairs)
    answer = rng.choice(("yes", "no"))
    if answer == "no":
        rel = rng.choice([_INVERSE[rel], *(r for r in RELATIONS if RELATIONS[r][0] != RELATIONS[rel][0])])
    return Question("relation", f"Is the {_reference(a, scene.objects)} {rel} the {_reference(b, scene.objects)}?", answer)


def _exists(scene: Scene, rng: random.Random) -> Question:
    """"Is there a <colour> <shape>?": yes or no with equal odds; half the "no"s share a colour
    or a shape with an object in the image, so the answer needs both bound together."""
    present = {(o.colour, o.shape) for o in scene.objects}
    if rng.random() < 0.5:
        colour, shape = rng.choice(sorted(present))
    else:
        absent = [(c, s) for c in OBJECT_COLOURS for s in SHAPES if (c, s) not in present]
        near = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
        colour, shape = rng.choice(near if near and rng.random() < 0.5 else absent)
    answer = "yes" if (colour, shape) in present else "no"
    return Question("exists", f"Is there {_article(colour)} {colour} {shape}?", answer)


def ask(scene: Scene, kind: str, rng: random.Random) -> Question | None:
    """One question of ``kind`` about ``scene`` (drawn with ``rng``), or None if it has none."""
    if kind == "caption":
        return Question(kind, CAPTION_PROMPT, canonical_scene(scene).caption())
    if kind == "background":
        return Question(kind, "What colour is the background?", scene.background)
    if kind == "count":
        return _count(scene, rng)
    if kind == "relation":
        return _relation(scene, rng)
    if kind == "exists":
        return _exists(scene, rng)
    if kind in ("colour", "shape", "size", "position"):
        return _about_one_object(scene, kind, rng)
    raise ValueError(f"unknown question kind {kind!r}; choose from {', '.join(KINDS)}")


#: How users word the questions the recipe asks in one fixed form: (kind, the fixed form's
#: start, alternatives). Words outside the vocabulary ("in", "this", "it") reach the model
#: as ``<|unk|>``: it learns the question from the words it knows and where the unknown ones stand.
_REWORDINGS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("caption", "Describe the image.", ("Describe the image", "Describe this image.", "What is in this image?",
                                        "What is in the image?", "What do you see?", "Caption the image.")),
    ("colour", "What colour is the ", ("What color is the ", "What is the colour of the ", "Which colour is the ")),
    ("shape", "What shape is the ", ("What is the shape of the ", "Which shape is the ")),
    ("count", "How many shapes are there?", ("How many shapes are in the image?", "How many objects are there?",
                                             "How many shapes?", "Count the shapes.")),
)
#: Questions about "it" for a scene of one object: nothing else can be meant.
_ABOUT_IT = {"colour": ("What colour is it?", "What color is this?"), "shape": ("What shape is it?", "What is it?")}


def reword(question: Question, scene: Scene, rng: random.Random) -> Question:
    """``question`` as a user might write it: another wording where one is known, in any case,
    with its final punctuation kept, changed or dropped. The answer stays the same."""
    text = question.text
    options = [alt + text[len(start):] for kind, start, alts in _REWORDINGS if kind == question.kind
               and text.startswith(start) for alt in alts]
    if len(scene.objects) == 1:
        options += _ABOUT_IT.get(question.kind, ())
    if options and rng.random() < 0.7:
        text = rng.choice(options)
    text = text.rstrip(".?!") + rng.choice(("?", "?", ".", "", " ?", "!"))
    text = rng.choice((text, text, text.lower(), text.upper(), text[0].lower() + text[1:]))
    return replace(question, text=text)


def sample_question(scene: Scene, weights: dict[str, float], rng: random.Random) -> Question:
    """A question of a kind drawn by ``weights``, redrawn until the scene has one of that kind."""
    kinds, odds = zip(*weights.items())
    while True:
        question = ask(scene, rng.choices(kinds, odds)[0], rng)
        if question is not None:
            return question
