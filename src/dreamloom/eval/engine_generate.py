"""Adapt the engine to the evaluation's ``GenerateFn`` (prompts + seeds in, images out)."""

from __future__ import annotations

from dreamloom.generate.engine import Engine
from dreamloom.generate.request import GenerationRequest


def engine_generate_fn(engine: Engine, model: str, sampler: str, steps: int, cfg_scale: float):
    def generate(prompts: list[str], seeds: list[int]):
        images = []
        for prompt, seed in zip(prompts, seeds):
            request = GenerationRequest(prompt=prompt, model=model, sampler=sampler, steps=steps, cfg_scale=cfg_scale, seed=seed)
            images += engine.generate(request, allow_paths=True).images
        return images

    return generate
