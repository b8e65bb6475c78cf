"""Inpainting: redraw the white part of a mask, keep every other pixel exactly.

Inpainting UNets (latents + mask + masked image in their input) run diffusers' inpainting
pipeline. Any other model runs img2img with an ``on_step`` hook that, after every step,
replaces the latents outside the mask by the init image's latents noised to the same level
(the blend diffusers and AUTOMATIC1111 use for ordinary models), which works for any latent
channel count. Either way a ``post_process`` hook pastes the result over the original through
the blurred mask, so pixels outside it are the original's, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline
from PIL import Image, ImageFilter

from dreamloom.generate.hooks import Stage, StageHooks
from dreamloom.generate.img2img import prepare_init_image, strength
from dreamloom.generate.modes import ModeSetup
from dreamloom.generate.request import GenerationRequest
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


class LatentBlend:
    """An ``on_step`` hook that keeps the unmasked latents on the init image's noising path.
    The init image is encoded once per request, the noise once per batch (from its seeds)."""

    def __init__(self, image: Image.Image, binary: Image.Image):
        self.image, self.binary = image, binary
        self._init: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._noise: dict[tuple[int, ...], torch.Tensor] = {}

    @torch.no_grad()
    def _prepare(self, pipeline: DiffusionPipeline, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device, dtype = pipeline.unet.device, pipeline.unet.dtype
        if self._init is None:
            vae = pipeline.vae
            pixels = pipeline.image_processor.preprocess(self.image).to(vae.device, vae.dtype)
            self._init = (vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor).to(device, dtype)
            mask = torch.from_numpy(np.asarray(self.binary, dtype=np.float32) / 255.0)[None, None]
            self._mask = (F.adaptive_max_pool2d(mask, self._init.shape[-2:]) > 0).to(device, dtype)
        key = tuple(seeds)
        if key not in self._noise:
            shape = self._init.shape[1:]
            self._noise[key] = torch.cat([torch.randn(shape, generator=g)[None] for g in generators(seeds)]).to(device, dtype)
        return self._init.repeat(len(seeds), 1, 1, 1), self._mask, self._noise[key]

    def on_step(self, pipeline: DiffusionPipeline, step: int, latents: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        init, mask, noise = self._prepare(pipeline, seeds)
        scheduler = pipeline.scheduler
        timesteps = scheduler.timesteps[len(scheduler.timesteps) - pipeline.num_timesteps :]
        known = scheduler.add_noise(init, noise, timesteps[step : step + 1]) if step < len(timesteps) else init
        return known * (1 - mask) + latents * mask


def paste_back(original: Image.Image, soft_mask: Image.Image):
    """A ``post_process`` hook: each image over ``original`` through the blurred mask."""

    def post_process(images: list[Image.Image]) -> list[Image.Image]:
        return [Image.composite(generated.convert("RGB"), original, soft_mask) for generated in images]

    return post_process


def inpaint(base: DiffusionPipeline, request: GenerationRequest) -> ModeSetup:
    # 1. init image and mask at the output size
    image, width, height = prepare_init_image(request)
    binary, soft = prepare_mask(request, width, height)
    hooks = StageHooks()
    # 2. an inpainting pipeline for inpainting UNets, img2img with a latent blend otherwise
    if is_inpainting_unet(base):
        arguments = {"image": image, "mask_image": binary, "strength": strength(request),
                     "width": width, "height": height}
        setup = ModeSetup(AutoPipelineForInpainting, width, height, arguments, hooks)
    else:
        hooks.add(Stage.on_step, LatentBlend(image, binary).on_step)
        setup = ModeSetup(AutoPipelineForImage2Image, width, height, {"image": image, "strength": strength(request)}, hooks)
    # 3. after decode, paste over the original through the blurred mask
    hooks.add(Stage.post_process, paste_back(image, soft))
    return setup
