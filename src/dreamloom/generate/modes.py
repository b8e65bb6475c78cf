"""What txt2img, img2img and inpaint each bring to the one run path: a ``ModeSetup``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dreamloom.generate.hooks import StageHooks
from dreamloom.generate.request import GenerationRequest


def mode_of(request: GenerationRequest) -> str:
    """"inpaint" (a mask), "img2img" (an init image) or "txt2img"."""
    if request.mask is not None:
        return "inpaint"
    return "img2img" if request.init_image is not None else "txt2img"


@dataclass
class ModeSetup:
    """How one request runs: the diffusers pipeline class to view the weights through, the
    output size, the request's keyword arguments of each pipeline call (besides prompts, noise
    and callbacks), and the mode's own stage hooks (inpaint's blend and paste-back)."""

    pipeline_class: type
    width: int
    height: int
    arguments: dict[str, Any]
    hooks: StageHooks = field(default_factory=StageHooks)
