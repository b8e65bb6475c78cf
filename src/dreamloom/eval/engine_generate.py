"""Adapt the engine to the evaluations' generate functions (prompts + seeds in, images out)."""

from __future__ import annotations

from dreamloom.generate.engine import Engine
from dreamloom.generate.request import GenerationRequest


def engine_generate_fn(engine: Engine, model: str, sampler: str, steps: int, cfg_scale: float):
    """A ``GenerateFn``: one image per prompt, each with its own seed."""

    def generate(prompts: list[str], seeds: list[int]):
        images = []
        for prompt, seed in zip(prompts, seeds):
            request = GenerationRequest(prompt=prompt, model=model, sampler=sampler, steps=steps, cfg_scale=cfg_scale, seed=seed)
            images += engine.generate(request, allow_paths=True).images
        return images

    return generate


def engine_sample_fn(engine: Engine, model: str, sampler: str, steps: int, cfg_scale: float, loras: list = ()):
    """A ``SampleFn``: ``count`` images of one prompt with seeds 0..count-1, in one batch."""

    def sample(prompt: str, count: int):
        request = GenerationRequest(prompt=prompt, model=model, sampler=sampler, steps=steps, cfg_scale=cfg_scale,
                                    seed=0, batch_size=count, loras=list(loras))
        return engine.generate(request, allow_paths=True).images

    return sample
