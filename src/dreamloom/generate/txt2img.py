"""Text to image."""

from __future__ import annotations

from diffusers import AutoPipelineForText2Image, DiffusionPipeline

from dreamloom.generate.modes import ModeSetup
from dreamloom.generate.pipelines import output_size
from dreamloom.generate.request import GenerationRequest


def txt2img(base: DiffusionPipeline, request: GenerationRequest) -> ModeSetup:
    """Denoise per-image seeded noise at the request's size (default: the model's native one)."""
    width, height = output_size(base, request)
    return ModeSetup(AutoPipelineForText2Image, width, height, {"width": width, "height": height})
