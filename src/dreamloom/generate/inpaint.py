"""Inpainting: redraw the white part of a mask, keep every other pixel exactly.

Inpainting UNets (latents + mask + masked image in their input) run diffusers'
inpainting pipeline. Any other model runs img2img while, after every step, the
latents outside the mask are replaced by the init image's latents noised to the same
level (the blend diffusers and AUTOMATIC1111 use for ordinary models), which works for
any latent channel count. Finally the result is pasted over the original through the
blurred mask, so pixels outside it are the original's, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline
from PIL import Image, ImageFilter

from dreamloom.generate.img2img import prepare_init_image
from dreamloom.generate.request import GenerationRequest, GenerationResult
from dreamloom.generate.runner import RunOptions, per_request_pipeline, run_batches
from dreamloom.generate.seeds import generators


def prepare_mask(request: GenerationRequest, width: int, height: int) -> tuple[Image.Image, Image.Image]:
    """The binary mask at the output size, and its blurred version used for pasting back."""
    if request.mask is None:
        raise ValueError("inpaint needs a mask")
    binary = request.mask.convert("L").resize((width, height), Image.Resampling.NEAREST).point(lambda v: 255 if v > 127 else 0)
    soft = binary.filter(ImageFilter.GaussianBlur(request.mask_blur)) if request.mask_blur else binary
    return binary, soft


def is_inpainting_unet(pipeline: DiffusionPipeline) -> bool:
    return pipeline.unet.config.in_channels == 2 * pipeline.vae.config.latent_channels + 1


def _latent_blend(pipeline, image: Image.Image, binary: Image.Image, seeds: list[int]):
    """A step hook that keeps the unmasked latents on the init image's noising path."""
    vae = pipeline.vae
    device, dtype = pipeline.unet.device, pipeline.unet.dtype
    pixels = pipeline.image_processor.preprocess(image).to(device, vae.dtype)
    with torch.no_grad():
        init = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    init = init.to(dtype).repeat(len(seeds), 1, 1, 1)
    mask = torch.from_numpy(np.asarray(binary, dtype=np.float32) / 255.0)[None, None]
    mask = (F.adaptive_max_pool2d(mask, init.shape[-2:]) > 0).to(device, dtype)
    noise = torch.cat([torch.randn(init.shape[1:], generator=g)[None] for g in generators(seeds)]).to(device, dtype)

    def hook(step: int, latents: torch.Tensor) -> torch.Tensor:
        scheduler = pipeline.scheduler
        timesteps = scheduler.timesteps[len(scheduler.timesteps) - pipeline.num_timesteps :]
        if step + 1 < len(timesteps):
            known = scheduler.add_noise(init, noise, timesteps[step + 1 : step + 2])
        else:
            known = init
        return known * (1 - mask) + latents * mask

    return hook


def inpaint(
    base: DiffusionPipeline,
    request: GenerationRequest,
    options: RunOptions = RunOptions(),
) -> GenerationResult:
    # 1. init image and mask at the output size
    image, width, height = prepare_init_image(request)
    binary, soft = prepare_mask(request, width, height)
    # 2. an inpainting pipeline for inpainting UNets, img2img with a latent blend otherwise
    if is_inpainting_unet(base):
        pipeline = per_request_pipeline(base, AutoPipelineForInpainting, request)

        def setup(pipe, seeds):
            extra = {"image": image, "mask_image": binary, "strength": request.denoising_strength}
            return {**extra, "width": width, "height": height}, None
    else:
        pipeline = per_request_pipeline(base, AutoPipelineForImage2Image, request)

        def setup(pipe, seeds):
            hook = _latent_blend(pipe, image, binary, seeds)
            return {"image": image, "strength": request.denoising_strength}, hook

    # 3. denoise, then paste over the original through the blurred mask
    result = run_batches(pipeline, request, width, height, setup, options)
    result.images = [Image.composite(generated.convert("RGB"), image, soft) for generated in result.images]
    return result
