"""Requests as members of a batch: their own hooks, and the key that says which may share a pass.

A single request is a batch of one: ``Engine.generate`` and ``Engine.generate_batch`` run
members through the same stages and rounds (``run.py``, ``rounds.py``). Every image keeps its
own seed and CPU generator, so a member draws the images it would draw alone (within the
engine's batch tolerance).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from dreamloom.generate.lora_syntax import lora_weights
from dreamloom.generate.progress import ProgressFn
from dreamloom.generate.request import GenerationRequest


@dataclass
class BatchMember:
    """One request inside a run, with its own hooks.

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
    on the shared modules). img2img and inpaint run alone. (DPM++ SDE batches too: each image
    has a Brownian tree of its own, seeded by the image's seed; see ``rounds.run_round``.)"""
    if request.init_image is not None:  # img2img, or inpaint: a mask needs an init image
        return None
    loras = tuple(sorted(lora_weights(request.prompt, request.loras).items()))
    return (request.model, request.width, request.height, request.sampler, request.steps, request.cfg_scale, loras)
