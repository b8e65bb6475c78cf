"""ShapeWorld: a procedural captioned-shapes data set and its exact adherence scorer."""

from dreamloom.shapeworld.grammar import ObjectSpec, PromptSpec, parse_prompt
from dreamloom.shapeworld.render import render, render_array
from dreamloom.shapeworld.scene import Scene, ShapeObject, sample_scene, sample_scenes
from dreamloom.shapeworld.scorer import Adherence, ImageReading, read_image, score_image
from dreamloom.shapeworld.subjects import SUBJECTS, Subject, context_prompts, detect_subject, render_subject_scene

__all__ = [
    "Adherence",
    "ImageReading",
    "ObjectSpec",
    "PromptSpec",
    "SUBJECTS",
    "Scene",
    "ShapeObject",
    "Subject",
    "context_prompts",
    "detect_subject",
    "parse_prompt",
    "read_image",
    "render",
    "render_array",
    "render_subject_scene",
    "sample_scene",
    "sample_scenes",
    "score_image",
]
