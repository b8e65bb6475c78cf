"""Text to image."""

from __future__ import annotations

from diffusers import AutoPipelineForText2Image, DiffusionPipeline

from dreamloom.generate.request import GenerationRequest, GenerationResult
from dreamloom.generate.runner import RunOptions, native_size, per_request_pipeline, run_batches


def output_size(base: DiffusionPipeline, request: GenerationRequest) -> tuple[int, int]:
    """Width and height: the request's, or the model's native resolution."""
    return request.width or native_size(base), request.height or native_size(base)


def txt2img(
    base: DiffusionPipeline,
    request: GenerationRequest,
    options: RunOptions = RunOptions(),
) -> GenerationResult:
    # 1. size: the request's, or the model's native resolution
    width, height = output_size(base, request)
    # 2. a pipeline of our own with a fresh sampler
    pipeline = per_request_pipeline(base, AutoPipelineForText2Image, request)

    # 3. denoise batch after batch from per-image seeded noise, and decode
    def setup(pipe, seeds):
        return {"width": width, "height": height}, None

    return run_batches(pipeline, request, width, height, setup, options)
