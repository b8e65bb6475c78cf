"""The diffusers pipeline a request runs on: its own view of the loaded weights with a fresh
sampler, and the model's native size."""

from __future__ import annotations

from diffusers import DiffusionPipeline

from dreamloom.generate.request import GenerationRequest
from dreamloom.generate.samplers import make_scheduler


def native_size(pipeline: DiffusionPipeline) -> int:
    """The model's trained resolution: UNet sample size times the VAE's downscale."""
    return pipeline.unet.config.sample_size * pipeline.vae_scale_factor


def output_size(base: DiffusionPipeline, request: GenerationRequest) -> tuple[int, int]:
    """Width and height: the request's, or the model's native resolution."""
    return request.width or native_size(base), request.height or native_size(base)


def per_request_pipeline(base: DiffusionPipeline, pipeline_class: type, request: GenerationRequest) -> DiffusionPipeline:
    """A pipeline object for this request only: shared weights, its own fresh scheduler
    (diffusers schedulers hold per-run state and must never be shared between runs)."""
    scheduler = make_scheduler(request.sampler, base.scheduler.config)
    pipeline = pipeline_class.from_pipe(base, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
