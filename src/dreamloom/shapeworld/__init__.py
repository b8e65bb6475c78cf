"""ShapeWorld: a procedural captioned-shapes data set and its exact adherence scorer."""

from dreamloom.shapeworld.grammar import ObjectSpec, PromptSpec, parse_prompt
from dreamloom.shapeworld.render import render, render_array
from dreamloom.shapeworld.scene import Scene, ShapeObject, sample_scene, sample_scenes
from dreamloom.shapeworld.scorer import Adherence, ImageReading, read_image, score_image

__all__ = [
    "Adherence",
    "ImageReading",
    "ObjectSpec",
    "PromptSpec",
    "Scene",
    "ShapeObject",
    "parse_prompt",
    "read_image",
    "render",
    "render_array",
    "sample_scene",
    "sample_scenes",
    "score_image",
]
