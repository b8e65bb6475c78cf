"""Several txt2img requests in one forward pass, as the job server batches compatible jobs.

Every image keeps its own seed and CPU generator, so each request gets the images it would
draw alone (within the engine's batch tolerance), and each keeps its own hooks: progress,
cancel, and AUTOMATIC1111's interrupt and skip. The sampler holds one row of state per image,
so a member that stops keeps its rows until the round ends, frozen at its latents of that
moment; a round whose members have all stopped ends early.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
from diffusers import AutoPipelineForText2Image, DiffusionPipeline, DPMSolverSDEScheduler
from PIL import Image

from dreamloom.generate.lora_syntax import lora_weights
from dreamloom.generate.progress import GenerationCancelled, ProgressFn, StepProgress, latents_to_images
from dreamloom.generate.request import GenerationRequest, GenerationResult
from dreamloom.generate.runner import RunOptions, per_request_pipeline, prompt_embeddings, request_result
from dreamloom.generate.samplers import get_sampler
from dreamloom.generate.seeds import generators, image_seeds, resolve_seed
from dreamloom.generate.txt2img import output_size


@dataclass
class BatchMember:
    """One request inside a shared forward pass, with its own hooks.

    ``progress`` sees this member's steps (its preview: its own images only). ``cancel``
    drops it (result None); ``interrupt`` stops it now and keeps its current latents, decoded;
    ``skip`` does that to its current batch only and goes on with its next one, then clears
    the event. The other members run on."""

    request: GenerationRequest
    progress: ProgressFn | None = None
    cancel: threading.Event | None = None
    interrupt: threading.Event | None = None
    skip: threading.Event | None = None


def batch_key(request: GenerationRequest) -> tuple | None:
    """Requests with equal keys may share a forward pass; None: it must run alone.

    The key holds what one pipeline call shares: model, size (an unset one is the model's
    native size either way), sampler, steps, CFG scale and the LoRAs with their weights (set
    on the shared modules). img2img and inpaint run alone, as does DPM++ SDE, whose
    Brownian-tree noise is drawn for the whole batch."""
    if request.init_image is not None:  # img2img, or inpaint: a mask needs an init image
        return None
    if issubclass(get_sampler(request.sampler).scheduler, DPMSolverSDEScheduler):
        return None
    loras = tuple(sorted(lora_weights(request.prompt, request.loras).items()))
    return (request.model, request.width, request.height, request.sampler, request.steps, request.cfg_scale, loras)


@dataclass
class _Run:
    """A member's state across rounds: its seeds, embeddings, images so far, how it ended."""

    member: BatchMember
    seeds: list[int]
    embeddings: dict[str, torch.Tensor]
    images: list[Image.Image] = field(default_factory=list)
    outcome: str | None = None  # "cancelled" or "interrupted" once it stopped for good

    @property
    def request(self) -> GenerationRequest:
        return self.member.request

    def asked(self) -> str | None:
        """"cancel", "interrupt" or "skip" when that event is set, in that order of precedence."""
        for name in ("cancel", "interrupt", "skip"):
            event = getattr(self.member, name)
            if event is not None and event.is_set():
                return name
        return None


@dataclass
class _Part:
    """A member's rows in one round's batch; ``frozen`` holds its latents from when it stopped."""

    run: _Run
    rows: slice
    stopped: bool = False
    frozen: torch.Tensor | None = None


def txt2img_batch(
    base: DiffusionPipeline,
    members: list[BatchMember],
    options: RunOptions = RunOptions(),
) -> list[GenerationResult | None]:
    """Draw ``members`` (of one ``batch_key``) together; a result per member, None if cancelled.
    ``options``' progress and cancel are unused: each member brings its own."""
    request = members[0].request
    # 1. size, and a pipeline of our own with a fresh sampler
    width, height = output_size(base, request)
    pipeline = per_request_pipeline(base, AutoPipelineForText2Image, request)
    # 2. each member's seeds and prompt embeddings
    runs = [
        _Run(m, image_seeds(resolve_seed(m.request.seed), m.request.batch_size * m.request.n_iter),
             prompt_embeddings(pipeline, m.request))
        for m in members
    ]
    # 3. embeddings of one length (prompts of as many token windows) can be stacked: such
    #    members denoise together, round r holding batch r of each
    groups: dict[torch.Size, list[_Run]] = {}
    for run in runs:
        groups.setdefault(run.embeddings["prompt_embeds"].shape, []).append(run)
    for group in groups.values():
        for round_ in range(max(run.request.n_iter for run in group)):
            _run_round(pipeline, group, round_, width, height, options.preview_every)
    # 4. each member's images with their seeds and infotexts
    return [_result(run, width, height, options) for run in runs]


def _run_round(
    pipeline: DiffusionPipeline, group: list[_Run], round_: int, width: int, height: int, preview_every: int
) -> None:
    """One pipeline call for batch ``round_`` of every member of ``group`` still running."""
    parts: list[_Part] = []
    for run in group:
        if run.outcome is not None or round_ >= run.request.n_iter:
            continue
        asked = run.asked()
        if asked == "skip":  # nothing of this batch to cut short yet (AUTOMATIC1111 clears it too)
            run.member.skip.clear()
        elif asked is not None:
            run.outcome = {"cancel": "cancelled", "interrupt": "interrupted"}[asked]
            continue
        start = parts[-1].rows.stop if parts else 0
        parts.append(_Part(run, slice(start, start + run.request.batch_size)))
    if not parts:
        return
    seeds = [s for p in parts for s in _round_seeds(p.run, round_)]
    embeddings = {
        key: torch.cat([p.run.embeddings[key] for p in parts for _ in range(p.run.request.batch_size)])
        for key in parts[0].run.embeddings
    }
    request = parts[0].run.request
    try:
        output = pipeline(
            **embeddings,
            width=width,
            height=height,
            num_images_per_prompt=1,
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            generator=generators(seeds),
            callback_on_step_end=_round_callback(parts, round_, preview_every),
        )
    except GenerationCancelled:  # every member of the round was cancelled: nothing to decode
        return
    for part in parts:
        if part.run.outcome != "cancelled":
            part.run.images += output.images[part.rows]


def _round_seeds(run: _Run, round_: int) -> list[int]:
    """The seeds of the member's batch ``round_``: the ones that batch gets when run alone."""
    size = run.request.batch_size
    return run.seeds[round_ * size : (round_ + 1) * size]


def _round_callback(parts: list[_Part], round_: int, preview_every: int):
    """A diffusers ``callback_on_step_end`` that reports each member's step, acts on its
    events, and holds a stopped member's rows at their latents from when it stopped."""

    def callback(pipeline, step: int, timestep, kwargs: dict) -> dict:
        latents = kwargs["latents"]
        if any(p.frozen is not None for p in parts):
            latents = latents.clone()  # the sampler may still hold the tensor it returned
        for part in parts:
            if part.frozen is not None:
                latents[part.rows] = part.frozen
            if part.stopped:
                continue
            run = part.run
            if run.member.progress is not None:
                total = pipeline.num_timesteps
                preview = None
                if preview_every and (step + 1) % preview_every == 0 and step + 1 < total:
                    preview = latents_to_images(pipeline, latents[part.rows])
                run.member.progress(StepProgress(step + 1, total, round_, run.request.n_iter, preview))
            asked = run.asked()
            if asked == "cancel":
                run.outcome = "cancelled"
            elif asked is not None:
                if asked == "interrupt":
                    run.outcome = "interrupted"
                else:
                    run.member.skip.clear()
                part.frozen = latents[part.rows].clone()
            part.stopped = asked is not None
        if all(p.stopped for p in parts):
            if all(p.frozen is None for p in parts):
                raise GenerationCancelled("every member of the batch was cancelled")
            pipeline._interrupt = True  # diffusers skips the remaining steps, then decodes
        kwargs["latents"] = latents
        return kwargs

    return callback


def _result(run: _Run, width: int, height: int, options: RunOptions) -> GenerationResult | None:
    if run.outcome == "cancelled":
        return None
    result = request_result(run.request, run.images, run.seeds[: len(run.images)], width, height, options)
    if run.outcome == "interrupted":
        result.extra["interrupted"] = True
    return result
