"""What txt2img, img2img and inpaint share: seeds, a fresh sampler, prompt embeddings,
batches one after another with progress, and the infotext of every image."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from dreamloom.generate.infotext import format_infotext
from dreamloom.generate.lora_syntax import split_lora_tags
from dreamloom.generate.progress import ProgressFn, step_callback
from dreamloom.generate.prompt_encoding import encode_prompt_pair
from dreamloom.generate.request import GenerationRequest, GenerationResult
from dreamloom.generate.samplers import make_scheduler
from dreamloom.generate.seeds import generators, image_seeds, resolve_seed

#: Builds the per-batch pipeline call: (pipeline, seeds of the batch) -> extra keyword
#: arguments and an optional latent hook for the step callback.
BatchSetup = Callable[[DiffusionPipeline, list[int]], tuple[dict, Callable | None]]


def native_size(pipeline: DiffusionPipeline) -> int:
    """The model's trained resolution: UNet sample size times the VAE's downscale."""
    return pipeline.unet.config.sample_size * pipeline.vae_scale_factor


def per_request_pipeline(base: DiffusionPipeline, pipeline_class: type, request: GenerationRequest) -> DiffusionPipeline:
    """A pipeline object for this request only: shared weights, its own fresh scheduler."""
    scheduler = make_scheduler(request.sampler, base.scheduler.config)
    pipeline = pipeline_class.from_pipe(base, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@dataclass
class RunOptions:
    """What the infotext records of the weights (model hash, LoRA name -> hash), and how a run
    reports and stops: injected by whoever calls the engine."""

    model_hash: str | None = None
    progress: ProgressFn | None = None
    cancel: threading.Event | None = None
    preview_every: int = 0
    lora_hashes: dict[str, str] = field(default_factory=dict)
    #: AUTOMATIC1111's interrupt: stop denoising now and keep the images as they are.
    interrupt: threading.Event | None = None


def run_batches(
    pipeline: DiffusionPipeline,
    request: GenerationRequest,
    width: int,
    height: int,
    setup: BatchSetup,
    options: RunOptions,
) -> GenerationResult:
    seeds = image_seeds(resolve_seed(request.seed), request.batch_size * request.n_iter)
    embeddings = prompt_embeddings(pipeline, request)
    images: list[Image.Image] = []
    for batch in range(request.n_iter):
        batch_seeds = seeds[batch * request.batch_size : (batch + 1) * request.batch_size]
        extra, latent_hook = setup(pipeline, batch_seeds)
        output = pipeline(
            **embeddings,
            **extra,
            num_images_per_prompt=request.batch_size,
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            generator=generators(batch_seeds),
            callback_on_step_end=step_callback(
                batch, request.n_iter, options.progress, options.cancel, options.preview_every, latent_hook,
                options.interrupt,
            ),
        )
        images += output.images
        if options.interrupt is not None and options.interrupt.is_set():
            result = request_result(request, images, seeds[: len(images)], width, height, options)
            result.extra["interrupted"] = True
            return result
    return request_result(request, images, seeds, width, height, options)


def prompt_embeddings(pipeline: DiffusionPipeline, request: GenerationRequest) -> dict[str, torch.Tensor]:
    """The request's prompt and negative prompt as pipeline keyword arguments; its LoRA tags
    are taken out first, since LoRAs are applied to the weights, not drawn as words."""
    prompt, _ = split_lora_tags(request.prompt)
    return encode_prompt_pair(pipeline, prompt, request.negative_prompt, request.clip_skip)


def request_result(
    request: GenerationRequest,
    images: list[Image.Image],
    seeds: list[int],
    width: int,
    height: int,
    options: RunOptions,
) -> GenerationResult:
    """The images of ``request`` drawn from ``seeds``, each with its infotext."""
    infotexts = [
        format_infotext(request, seed, width, height, options.model_hash, options.lora_hashes) for seed in seeds
    ]
    return GenerationResult(images=images, seeds=seeds, infotexts=infotexts, request=request)
