"""Held-out ShapeWorld prompts: drawn from seeds the training recipe never uses."""

from __future__ import annotations

from dreamloom.shapeworld import Scene, sample_scenes

#: Training scenes come from the recipe's ``data.seed`` (small integers); these are far away.
_HELD_OUT_SEEDS = {1: 1_000_001, 2: 1_000_002, 3: 1_000_003}


def held_out_scenes(count: int, n_objects: int) -> list[Scene]:
    """``count`` scenes with ``n_objects`` objects each, the same on every call."""
    return sample_scenes(_HELD_OUT_SEEDS[n_objects], count, n_objects=n_objects)
