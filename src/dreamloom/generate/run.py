"""The one run path: members (a single request is a batch of one) through the stages.

    prepare_request (engine) -> mode setup -> encode_prompts -> rounds of
    [prepare_conditioning -> diffusers pipeline call with on_step -> decode -> post_process]
    -> results with infotexts -> save (engine)

Members whose prompt embeddings have one length (as many token windows) are stacked into
one pipeline call per round, round r holding batch r of each; a request that must run alone
(``batch_key`` None: img2img, inpaint, DPM++ SDE) is a group of one through the same code.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from dreamloom.generate.batched import BatchMember
from dreamloom.generate.hooks import Stage, StageHooks
from dreamloom.generate.img2img import img2img
from dreamloom.generate.infotext import format_infotext
from dreamloom.generate.inpaint import inpaint
from dreamloom.generate.lora_syntax import split_lora_tags
from dreamloom.generate.modes import ModeSetup, mode_of
from dreamloom.generate.pipelines import per_request_pipeline
from dreamloom.generate.prompt_encoding import encode_prompt_pair
from dreamloom.generate.request import GenerationRequest, GenerationResult
from dreamloom.generate.rounds import MemberRun, run_round
from dreamloom.generate.seeds import image_seeds, resolve_seed
from dreamloom.generate.txt2img import txt2img

_MODES = {"txt2img": txt2img, "img2img": img2img, "inpaint": inpaint}


def mode_setup(base: DiffusionPipeline, request: GenerationRequest) -> ModeSetup:
    """The setup of txt2img, img2img or inpaint, whichever the request's inputs ask for."""
    return _MODES[mode_of(request)](base, request)


def run_members(
    base: DiffusionPipeline,
    members: list[BatchMember],
    hooks: StageHooks,
    model_hash: str | None = None,
    lora_hashes: dict[str, str] | None = None,
    preview_every: int = 0,
) -> list[GenerationResult | None]:
    """Draw ``members`` (prepared requests of one batch key, or one request) on ``base``: a
    result per member, None for a cancelled one. ``hooks`` are the engine's, run after each
    mode's own; the hashes are what the infotexts record of the weights."""
    # 1. each member's mode (pipeline class, size, call arguments, own hooks) and seeds
    runs = []
    for member in members:
        setup = mode_setup(base, member.request)
        seeds = image_seeds(resolve_seed(member.request.seed), member.request.batch_size * member.request.n_iter)
        runs.append(MemberRun(member, member.request, setup, setup.hooks + hooks, seeds))
    # 2. a pipeline of our own with a fresh sampler (the members share class and sampler)
    pipeline = per_request_pipeline(base, runs[0].setup.pipeline_class, runs[0].request)
    # 3. encode prompts
    for run in runs:
        run.embeddings = run.hooks.chain(
            Stage.encode_prompts, "embeddings", pipeline=pipeline, request=run.request,
            embeddings=prompt_embeddings(pipeline, run.request),
        )
    # 4. rounds: conditioning, denoise with per-step hooks, decode, post-process
    groups: dict[torch.Size, list[MemberRun]] = {}
    for run in runs:
        groups.setdefault(run.embeddings["prompt_embeds"].shape, []).append(run)
    for group in groups.values():
        for round_ in range(max(run.request.n_iter for run in group)):
            run_round(pipeline, group, round_, preview_every)
    # 5. each member's images with their seeds and infotexts
    return [_result(run, model_hash, lora_hashes or {}) for run in runs]


def prompt_embeddings(pipeline: DiffusionPipeline, request: GenerationRequest) -> dict[str, torch.Tensor]:
    """The request's prompt and negative prompt as pipeline keyword arguments; its LoRA tags
    are taken out first, since LoRAs are applied to the weights, not drawn as words."""
    prompt, _ = split_lora_tags(request.prompt)
    return encode_prompt_pair(pipeline, prompt, request.negative_prompt, request.clip_skip)


def _result(run: MemberRun, model_hash: str | None, lora_hashes: dict[str, str]) -> GenerationResult | None:
    """The member's images, each with its seed and infotext; None if it was cancelled."""
    if run.outcome == "cancelled":
        return None
    seeds = run.seeds[: len(run.images)]
    width, height = run.setup.width, run.setup.height
    infotexts = [format_infotext(run.request, seed, width, height, model_hash, lora_hashes) for seed in seeds]
    result = GenerationResult(images=run.images, seeds=seeds, infotexts=infotexts, request=run.request)
    if run.outcome == "interrupted":
        result.extra["interrupted"] = True
    return result
