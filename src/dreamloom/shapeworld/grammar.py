"""Read a prompt written in ShapeWorld's grammar back into what it asks for.

The parser is lenient where people are: sizes and the background may be left out,
"an"/"one" work as articles, words it does not know (a DreamBooth token such as
"sks", "a photo of") are skipped. What it cannot read is simply not asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dreamloom.shapeworld.vocab import BACKGROUND_COLOURS, OBJECT_COLOURS, RELATIONS, SHAPES, SIZES


@dataclass(frozen=True)
class ObjectSpec:
    """One object a prompt asks for; ``size`` is None when the prompt does not say."""

    shape: str
    colour: str | None
    size: str | None


@dataclass(frozen=True)
class PromptSpec:
    objects: tuple[ObjectSpec, ...]
    background: str | None
    relation: str | None


_WORD = r"[a-z]+"
_COLOUR = "|".join(BACKGROUND_COLOURS)
_OBJECT = re.compile(
    rf"\b(?:(?P<size>{'|'.join(SIZES)})\s+)?(?:(?P<colour>{'|'.join(OBJECT_COLOURS)})\s+)?(?:{_WORD}\s+)?(?P<shape>{'|'.join(SHAPES)})s?\b"
)
_BACKGROUND = re.compile(rf"\bon an? (?P<colour>{_COLOUR}) background\b")
_RELATION = re.compile(rf"\b(?P<relation>{'|'.join(RELATIONS)})\b")


def parse_prompt(prompt: str) -> PromptSpec:
    """Parse ``prompt``; a relation counts only when it sits between the first two objects."""
    text = " ".join(re.sub(r"[^a-z ]", " ", prompt.lower()).split())
    background_match = _BACKGROUND.search(text)
    background = background_match.group("colour") if background_match else None
    body = text[: background_match.start()] if background_match else text
    matches = list(_OBJECT.finditer(body))
    objects = tuple(ObjectSpec(m.group("shape"), m.group("colour"), m.group("size")) for m in matches)
    relation = None
    if len(matches) == 2:
        between = _RELATION.search(body[matches[0].end() : matches[1].start()])
        relation = between.group("relation") if between else None
    return PromptSpec(objects, background, relation)
