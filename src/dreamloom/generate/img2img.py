"""Image to image: the init image is noised to ``denoising_strength`` and redrawn from there."""

from __future__ import annotations

from diffusers import AutoPipelineForImage2Image, DiffusionPipeline
from PIL import Image

from dreamloom.generate.modes import ModeSetup
from dreamloom.generate.request import GenerationRequest


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


def strength(request: GenerationRequest) -> float:
    """The strength a pipeline is given: the request's, but at least one step's worth. diffusers
    runs ``int(steps * strength)`` steps and fails on none; AUTOMATIC1111 runs at least one."""
    return min(1.0, max(request.denoising_strength, 1.0 / request.steps + 1e-9))


def img2img(base: DiffusionPipeline, request: GenerationRequest) -> ModeSetup:
    """Noise the init image (at the output size) to the strength's timestep and denoise from there."""
    image, width, height = prepare_init_image(request)
    return ModeSetup(AutoPipelineForImage2Image, width, height, {"image": image, "strength": strength(request)})
