"""Progress reports and cancellation, injected into the engine as plain callables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image


class GenerationCancelled(Exception):
    """Raised by ``Engine.generate`` when its cancel event stops the run."""


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
