"""Seeds: -1 means random; image i of a request uses seed + i, so it can be redrawn alone."""

from __future__ import annotations

import secrets

import torch


def resolve_seed(seed: int) -> int:
    return secrets.randbelow(2**32) if seed == -1 else seed


def image_seeds(first: int, count: int) -> list[int]:
    return [(first + i) % 2**32 for i in range(count)]


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: its noise never depends on the batch around it,
    and CPU generators give the same noise on every device (as AUTOMATIC1111's "CPU" RNG)."""
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]
