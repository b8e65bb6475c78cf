"""Image to image: the init image is noised to ``denoising_strength`` and redrawn from there."""

from __future__ import annotations

from diffusers import AutoPipelineForImage2Image, DiffusionPipeline
from PIL import Image

from dreamloom.generate.request import GenerationRequest, GenerationResult
from dreamloom.generate.runner import RunOptions, per_request_pipeline, run_batches


def prepare_init_image(request: GenerationRequest) -> tuple[Image.Image, int, int]:
    """The init image at the requested size (default: its own size, floored to a multiple of 8)."""
    if request.init_image is None:
        raise ValueError("img2img needs an init_image")
    image = request.init_image.convert("RGB")
    width = request.width or image.width // 8 * 8
    height = request.height or image.height // 8 * 8
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image, width, height


def img2img(
    base: DiffusionPipeline,
    request: GenerationRequest,
    options: RunOptions = RunOptions(),
) -> GenerationResult:
    # 1. the init image at the output size
    image, width, height = prepare_init_image(request)
    # 2. a pipeline of our own with a fresh sampler
    pipeline = per_request_pipeline(base, AutoPipelineForImage2Image, request)

    # 3. noise the image to the strength's timestep and denoise from there
    def setup(pipe, seeds):
        return {"image": image, "strength": request.denoising_strength}, None

    return run_batches(pipeline, request, width, height, setup, options)
