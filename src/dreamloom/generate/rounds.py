"""One round of a run: batch ``r`` of every member of a group, in one diffusers pipeline call.

The sampler holds one row of state per image, so a member that stops (cancel, interrupt,
skip) keeps its rows until the round ends, frozen at its latents of that moment; a round
whose members have all stopped ends early through diffusers' own interrupt flag. The pipeline
returns latents; decode and post-process are stages of their own, per member.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from dreamloom.generate.batched import BatchMember
from dreamloom.generate.decode import decode_latents
from dreamloom.generate.hooks import Stage, StageHooks
from dreamloom.generate.modes import ModeSetup
from dreamloom.generate.progress import GenerationCancelled, StepProgress
from dreamloom.generate.request import GenerationRequest
from dreamloom.generate.seeds import generators

_OUTCOMES = {"cancel": "cancelled", "interrupt": "interrupted"}


@dataclass
class MemberRun:
    """A member's state across rounds: its prepared request, mode, hooks, seeds, embeddings,
    images so far, and how it ended."""

    member: BatchMember
    request: GenerationRequest
    setup: ModeSetup
    hooks: StageHooks
    seeds: list[int]
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    images: list[Image.Image] = field(default_factory=list)
    outcome: str | None = None  # "cancelled" or "interrupted" once it stopped for good

    def asked(self) -> str | None:
        """"cancel", "interrupt" or "skip" when that event is set, in that order of precedence."""
        for name in ("cancel", "interrupt", "skip"):
            event = getattr(self.member, name)
            if event is not None and event.is_set():
                return name
        return None

    def batch_seeds(self, round_: int) -> list[int]:
        """The seeds of batch ``round_``: the ones that batch gets when run alone."""
        size = self.request.batch_size
        return self.seeds[round_ * size : (round_ + 1) * size]


@dataclass
class _Part:
    """A member's rows in one round's batch; ``frozen`` holds its latents from when it stopped."""

    run: MemberRun
    rows: slice
    seeds: list[int]
    stopped: bool = False
    frozen: torch.Tensor | None = None


def run_round(pipeline: DiffusionPipeline, group: list[MemberRun], round_: int, preview_every: int) -> None:
    """One pipeline call for batch ``round_`` of every member of ``group`` still running."""
    parts = _parts(group, round_)
    if not parts:
        return
    request = parts[0].run.request
    seeds = [s for p in parts for s in p.seeds]
    if hasattr(pipeline.scheduler, "noise_sampler_seed"):  # DPM++ SDE: one Brownian tree per image, from its seed
        pipeline.scheduler.noise_sampler_seed = seeds
    embeddings = {
        key: torch.cat([p.run.embeddings[key] for p in parts for _ in p.seeds]) for key in parts[0].run.embeddings
    }
    try:
        output = pipeline(
            **embeddings,
            **_conditioning(pipeline, parts, round_),
            num_images_per_prompt=1,
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            generator=generators(seeds),
            output_type="latent",
            callback_on_step_end=_step_callback(parts, round_, preview_every),
        )
    except GenerationCancelled:  # every member of the round was cancelled: nothing to decode
        return
    kept = [p for p in parts if p.run.outcome != "cancelled"]
    for part, images in zip(kept, _decode(pipeline, kept, output.images, round_)):
        part.run.images += part.run.hooks.chain(
            Stage.post_process, "images", pipeline=pipeline, request=part.run.request, images=images,
            seeds=part.seeds, batch=round_,
        )


def _parts(group: list[MemberRun], round_: int) -> list[_Part]:
    """The rows of each member that runs batch ``round_``; a skip asked between batches is cleared
    (nothing of this batch to cut short yet, as AUTOMATIC1111 clears it too)."""
    parts: list[_Part] = []
    for run in group:
        if run.outcome is not None or round_ >= run.request.n_iter:
            continue
        asked = run.asked()
        if asked == "skip":
            run.member.skip.clear()
        elif asked is not None:
            run.outcome = _OUTCOMES[asked]
            continue
        start = parts[-1].rows.stop if parts else 0
        parts.append(_Part(run, slice(start, start + run.request.batch_size), run.batch_seeds(round_)))
    return parts


def _conditioning(pipeline: DiffusionPipeline, parts: list[_Part], round_: int) -> dict:
    """The call's keyword arguments: each member's, through its ``prepare_conditioning`` hooks.
    Members share one call, so they must agree (their batch key says they do)."""
    merged: dict | None = None
    for part in parts:
        arguments = part.run.hooks.chain(
            Stage.prepare_conditioning, "arguments", pipeline=pipeline, request=part.run.request,
            arguments=dict(part.run.setup.arguments), seeds=part.seeds, batch=round_,
        )
        if merged is None:
            merged = arguments
        elif not _same(merged, arguments):
            raise ValueError("members of one batch asked for different pipeline arguments; run them apart")
    return merged


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def _decode(pipeline: DiffusionPipeline, parts: list[_Part], latents: torch.Tensor, round_: int) -> list[list[Image.Image]]:
    """Each part's images: a ``decode`` hook's where one answers, else the VAE's, in one decode
    for all such parts (for a lone request: exactly the decode diffusers would run)."""
    decoded: list[list[Image.Image] | None] = [
        p.run.hooks.first(Stage.decode, pipeline=pipeline, request=p.run.request, latents=latents[p.rows],
                          seeds=p.seeds, batch=round_)
        for p in parts
    ]
    for part, images in zip(parts, decoded):
        if images is not None and len(images) != len(part.seeds):
            raise ValueError(f"a decode hook returned {len(images)} images for a batch of {len(part.seeds)}")
    pending = [i for i, images in enumerate(decoded) if images is None]
    if pending:
        images = iter(decode_latents(pipeline, torch.cat([latents[parts[i].rows] for i in pending])))
        for i in pending:
            decoded[i] = [next(images) for _ in parts[i].seeds]
    return decoded


def _step_callback(parts: list[_Part], round_: int, preview_every: int):
    """A diffusers ``callback_on_step_end`` that runs each member's ``on_step`` hooks on its rows,
    reports its step, acts on its events, and holds a stopped member's rows at their latents
    from when it stopped."""
    rewrites = any(p.run.hooks.has(Stage.on_step) for p in parts)

    def callback(pipeline: DiffusionPipeline, step: int, timestep, kwargs: dict) -> dict:
        latents = kwargs["latents"]
        if rewrites or any(p.frozen is not None for p in parts):
            latents = latents.clone()  # the sampler may still hold the tensor it returned
        total = pipeline.num_timesteps
        for part in parts:
            if part.frozen is not None:
                latents[part.rows] = part.frozen
            if part.stopped:
                continue
            run = part.run
            if run.hooks.has(Stage.on_step):
                latents[part.rows] = run.hooks.chain(
                    Stage.on_step, "latents", pipeline=pipeline, request=run.request, step=step + 1, total=total,
                    timestep=timestep, latents=latents[part.rows], seeds=part.seeds, batch=round_,
                )
            if run.member.progress is not None:
                preview = None
                if preview_every and (step + 1) % preview_every == 0 and step + 1 < total:
                    preview = decode_latents(pipeline, latents[part.rows])
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
            pipeline._interrupt = True  # diffusers skips the remaining steps, then returns the latents
        kwargs["latents"] = latents
        return kwargs

    return callback
