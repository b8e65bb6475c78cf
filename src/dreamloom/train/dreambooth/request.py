"""A DreamBooth run as a form or an API body asks for it: the few choices a person makes
(subject, prompts, LoRA or full, steps, prior preservation), turned into a full
``DreamBoothConfig`` with the recipe's defaults for the rest. The web UI's Train tab takes
its controls' ranges and defaults from this model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dreamloom.generate.request import DEFAULT_MODEL
from dreamloom.text import Text
from dreamloom.train.dreambooth.config import DreamBoothConfig, LoraConfig, ValidationConfig

#: Learning rates that work for each method on the embedded model (the striped-star recipe).
DEFAULT_RATES = {"lora": 1e-4, "full": 5e-6}
#: A LoRA of the embedded model needs adapters on its convolutions too: its UNet has no
#: attention at the 16x16 level (see configs/dreambooth-striped-star.yaml).
_LORA_MODULES = ["to_k", "to_q", "to_v", "to_out.0", "conv1", "conv2"]


class TrainingRequest(BaseModel):
    """Teach ``base_model`` a subject from a few images; the result is a LoRA (or a model)
    called ``name`` in the models folder, where the pickers list it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z0-9][\w.-]{0,63}$",
                      description="Name of the LoRA or model the run writes (letters, digits, '.', '_', '-').")
    base_model: str = Field(DEFAULT_MODEL, description="Model to personalize.")
    instance_prompt: Text = Field(..., min_length=1, max_length=200,
                                 description='Unique token + class noun, e.g. "a sks star".')
    class_prompt: Text = Field("", max_length=200, description='The class alone, e.g. "a star" (for prior preservation).')
    method: Literal["lora", "full"] = Field("lora", description="lora: small adapter files; full: fine-tune all UNet weights.")
    steps: int = Field(400, ge=1, le=5000, description="Optimizer steps.")
    learning_rate: float | None = Field(None, gt=0, le=1e-2,
                                        description="Default: 1e-4 for LoRA, 5e-6 for a full fine-tune.")
    prior_preservation: bool = Field(True, description="Keep the class's look with generated class images.")
    num_class_images: int = Field(50, ge=1, le=1000, description="Class images (generated with the base model if missing).")
    rank: int = Field(8, ge=1, le=128, description="LoRA rank.")
    train_text_encoder: bool = Field(True, description="Also train the text encoder (its adapters with LoRA).")
    validation_prompt: Text = Field("", max_length=200,
                                   description="Drawn into sample grids during the run; default: the instance prompt.")
    seed: int = Field(0, ge=0, le=2**32 - 1)

    def to_config(self, instance_dir: Path, output_dir: Path, base_model: str | None = None) -> DreamBoothConfig:
        """The full run configuration; its validation (prompts agree on the class noun, ...)
        raises here, before the job is queued. ``base_model``: where the named base model was
        found (the trainer loads paths as well as names)."""
        lora = self.method == "lora"
        return DreamBoothConfig(
            base_model=base_model or self.base_model,
            instance_data_dir=instance_dir,
            instance_prompt=self.instance_prompt,
            class_prompt=self.class_prompt or None,
            with_prior_preservation=self.prior_preservation,
            num_class_images=self.num_class_images,
            train_text_encoder=self.train_text_encoder,
            lora=LoraConfig(enabled=lora, name=self.name, rank=self.rank, alpha=float(self.rank),
                            unet_target_modules=_LORA_MODULES),
            max_steps=self.steps,
            learning_rate=self.learning_rate or DEFAULT_RATES[self.method],
            snr_gamma=5.0,
            seed=self.seed,
            output_dir=output_dir,
            checkpointing_steps=max(1, self.steps // 4),
            checkpoints_total_limit=1,
            loss_every=max(1, min(10, self.steps // 20)),
            validation=ValidationConfig(prompts=[self.validation_prompt or self.instance_prompt],
                                        every=max(1, self.steps // 4), num_images=4),
            logger="none",
        )
