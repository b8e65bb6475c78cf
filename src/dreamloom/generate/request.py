"""Typed generation requests and results: limits, defaults and help written once.

The CLI options, the HTTP schema and the UI controls are all derived from these models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dreamloom.generate.lora_syntax import LoraWeight, split_lora_tags
from dreamloom.generate.samplers import DEFAULT_SAMPLER, SAMPLERS
from dreamloom.text import Text

DEFAULT_MODEL = "dreamloom-tiny-sd"


class GenerationRequest(BaseModel):
    """What to draw and how; shared by txt2img, img2img and inpaint."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    prompt: Text = Field(..., description="What to draw; AUTOMATIC1111 attention syntax such as (word:1.3) works, "
                                         "and <lora:name:weight> applies a LoRA.")
    negative_prompt: Text = Field("", description="What to steer away from.")
    model: str = Field(DEFAULT_MODEL, description="Model name from the registry (see `dreamloom models`).")
    sampler: str = Field(DEFAULT_SAMPLER, description="Sampler, by its AUTOMATIC1111 name.")
    steps: int = Field(20, ge=1, le=150, description="Denoising steps.")
    cfg_scale: float = Field(7.0, ge=0.0, le=30.0, description="Classifier-free guidance scale; 1 disables guidance.")
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="Seed of the first image; -1 picks one at random.")
    width: int | None = Field(None, ge=8, le=4096, description="Width in pixels, a multiple of 8; default: the model's native size.")
    height: int | None = Field(None, ge=8, le=4096, description="Height in pixels, a multiple of 8; default: the model's native size.")
    batch_size: int = Field(1, ge=1, le=64, description="Images generated together in one pass.")
    n_iter: int = Field(1, ge=1, le=100, description="Batch count: how many batches one after another.")
    clip_skip: int = Field(1, ge=1, le=12, description="Use the text encoder's N-th layer from the end (1 = last).")
    loras: list[LoraWeight] = Field(default_factory=list, max_length=16,
                                    description="LoRAs to apply (name, weight); the prompt's <lora:...> tags add to these.")
    enhance: bool = Field(False, description="Rewrite the prompt through the vision model before drawing (the "
                                             "infotext keeps the prompt as written, as 'Enhanced from').")
    enhanced_from: str | None = Field(None, description="The prompt as written, once the engine enhanced it (set "
                                                        "by the engine; an enhanced request is not enhanced again).")
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0, description="img2img/inpaint: how much of the init image is redrawn.")
    mask_blur: int = Field(4, ge=0, le=64, description="inpaint: Gaussian blur radius of the mask edge, in pixels.")
    init_image: Image.Image | None = Field(None, description="img2img/inpaint: the starting image.", exclude=True)
    mask: Image.Image | None = Field(None, description="inpaint: white where to redraw, black where to keep.", exclude=True)

    @field_validator("prompt")
    @classmethod
    def _lora_tags_are_valid(cls, value: str) -> str:
        split_lora_tags(value)
        return value

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise ValueError(f"unknown sampler {value!r}; choose one of: {', '.join(SAMPLERS)}")
        return value

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"must be a multiple of 8, got {value}")
        return value

    @model_validator(mode="after")
    def _mask_needs_image(self) -> GenerationRequest:
        if self.mask is not None and self.init_image is None:
            raise ValueError("a mask needs an init_image")
        return self


@dataclass
class GenerationResult:
    """Images with the seed and the AUTOMATIC1111 infotext of each."""

    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    request: GenerationRequest
    extra: dict = field(default_factory=dict)
