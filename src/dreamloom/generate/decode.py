"""Latents to images, as diffusers' Stable Diffusion and SDXL pipelines decode them.

The run asks its pipeline for latents (``output_type="latent"``) and decodes them here, so
that the decode is a stage of its own: a ``decode`` hook (tiled VAE, TAESD, a hires pass) can
take its place, and previews decode the same way as final images.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline
from PIL import Image


@torch.no_grad()
def decode_latents(pipeline: DiffusionPipeline, latents: torch.Tensor) -> list[Image.Image]:
    """The images of ``latents``: unscaled (by the VAE's latents mean and std where it has them,
    SDXL-style), decoded, and post-processed to PIL. A float16 VAE whose config asks for it
    (``force_upcast``, SDXL's VAE overflows in half precision) decodes in float32, as diffusers does."""
    vae = pipeline.vae
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, -1, 1, 1)
        mean = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
        std = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
        latents = latents * std / config.scaling_factor + mean
    else:
        latents = latents / config.scaling_factor
    upcast = vae.dtype == torch.float16 and getattr(config, "force_upcast", False)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        pixels = vae.decode(latents.to(vae.device, vae.dtype), return_dict=False)[0]
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    if getattr(pipeline, "watermark", None) is not None:  # SDXL's invisible watermark, when installed
        pixels = pipeline.watermark.apply_watermark(pixels)
    return pipeline.image_processor.postprocess(pixels, output_type="pil")
