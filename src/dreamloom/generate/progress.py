"""Progress reports and cancellation, injected into the engine as plain callables."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image


class GenerationCancelled(Exception):
    """Raised inside a pipeline run when its cancel event is set."""


@dataclass
class StepProgress:
    """``step`` of ``total`` denoising steps in batch ``batch`` of ``batches``; ``preview``
    holds the current decoded latents every few steps when previews were asked for."""

    step: int
    total: int
    batch: int
    batches: int
    preview: list[Image.Image] | None = None


ProgressFn = Callable[[StepProgress], None]


def latents_to_images(pipeline, latents: torch.Tensor) -> list[Image.Image]:
    vae = pipeline.vae
    with torch.no_grad():
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return pipeline.image_processor.postprocess(decoded, output_type="pil")


def step_callback(
    batch: int,
    batches: int,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
    preview_every: int = 0,
    latent_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    interrupt: threading.Event | None = None,
):
    """A diffusers ``callback_on_step_end`` that reports, previews, cancels, and lets
    ``latent_hook`` rewrite the latents (inpainting's known-region blend). ``interrupt`` ends
    the denoising early through diffusers' own ``interrupt`` flag, so the pipeline still
    decodes the latents it has (AUTOMATIC1111's interrupt)."""

    def callback(pipeline, step: int, timestep, kwargs: dict) -> dict:
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("generation cancelled")
        if interrupt is not None and interrupt.is_set():
            pipeline._interrupt = True  # diffusers skips the remaining steps, then decodes
            return kwargs
        if latent_hook is not None:
            kwargs["latents"] = latent_hook(step, kwargs["latents"])
        if progress is not None:
            total = pipeline.num_timesteps
            preview = None
            if preview_every and ((step + 1) % preview_every == 0) and step + 1 < total:
                preview = latents_to_images(pipeline, kwargs["latents"])
            progress(StepProgress(step + 1, total, batch, batches, preview))
        return kwargs

    return callback
