"""The typed DreamBooth run configuration: one YAML file, every field overridable as ``key.sub=value``.

The fields follow diffusers' ``train_dreambooth.py`` / ``train_dreambooth_lora.py`` so a
run from either translates field by field; training mechanics (precision, devices,
strategy) are Lightning's own names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dreamloom.configfile import load_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraConfig(_Strict):
    enabled: bool = Field(False, description="Train low-rank adapters instead of the full weights.")
    name: str | None = Field(None, pattern=r"^[\w.-]+$", description="Name of the LoRA files (default: output_dir's name).")
    rank: int = Field(4, gt=0, description="Rank r of each adapter.")
    alpha: float = Field(4.0, gt=0, description="Scale numerator: the update is (alpha / r) * B @ A.")
    dropout: float = Field(0.0, ge=0, lt=1)
    unet_target_modules: list[str] = Field(["to_k", "to_q", "to_v", "to_out.0"], min_length=1,
                                           description="UNet attention projections that get adapters.")
    text_encoder_target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "out_proj"], min_length=1,
                                                   description="Text-encoder projections (with train_text_encoder).")


class ValidationConfig(_Strict):
    prompts: list[str] = Field([], description="Prompts drawn into a sample grid during training (none: no grids).")
    every: int = Field(100, gt=0, description="Optimizer steps between sample grids (and one at the end).")
    num_images: int = Field(4, gt=0, le=16, description="Images per prompt, seeds 0..n-1.")
    steps: int = Field(20, gt=0, le=150)
    cfg_scale: float = Field(7.0, ge=0)


class DreamBoothConfig(_Strict):
    # what to learn
    base_model: str = Field("dreamloom-tiny-sd", description="Model name (see `dreamloom models`) or diffusers folder.")
    instance_data_dir: Path = Field(..., description="3-5 images of the subject; image.txt beside image.png is its caption.")
    instance_prompt: str = Field(..., description='Unique identifier + class noun, e.g. "a sks star".')
    class_prompt: str | None = Field(None, description='The class alone, e.g. "a star"; needed for prior preservation.')
    class_noun: str | None = Field(None, description="Noun the instance prompt must contain; default: class prompt's last word.")
    with_prior_preservation: bool = Field(True, description="Add the class-prior loss (the paper's Eq. 2).")
    prior_loss_weight: float = Field(1.0, ge=0, description="Weight lambda of the class-prior loss.")
    class_data_dir: Path | None = Field(None, description="Class images; missing ones are generated (default: output_dir/class_images).")
    num_class_images: int = Field(100, gt=0, description="Class images to use; generated with the base model when fewer exist.")
    class_image_steps: int = Field(20, gt=0, description="Sampling steps when generating class images.")
    # what to train
    train_text_encoder: bool = Field(False, description="Also train the text encoder (or its adapters with LoRA).")
    lora: LoraConfig = LoraConfig()
    # data
    resolution: int | None = Field(None, gt=0, description="Training size in pixels; default: the model's native size.")
    center_crop: bool = Field(True, description="Crop the centre after resizing; false: a random crop.")
    random_flip: bool = Field(False, description="Flip images horizontally at random.")
    # optimisation
    train_batch_size: int = Field(1, gt=0, description="Instance images per batch (as many class images join them).")
    gradient_accumulation_steps: int = Field(1, gt=0)
    max_steps: int = Field(400, gt=0, description="Optimizer steps.")
    learning_rate: float = Field(5e-6, gt=0)
    scale_lr: bool = Field(False, description="Multiply the rate by batch size x accumulation x processes.")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_weight_decay: float = Field(1e-2, ge=0)
    adam_epsilon: float = Field(1e-8, gt=0)
    use_8bit_adam: bool = Field(False, description="bitsandbytes' 8-bit AdamW (needs a CUDA GPU).")
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory, more time.")
    mixed_precision: Literal["32", "16-mixed", "bf16-mixed"] = Field("32", description="Lightning precision; CPUs run 16-mixed as bf16.")
    offset_noise: float = Field(0.0, ge=0, description="Offset-noise strength (0.1 is common): darker darks, brighter brights.")
    snr_gamma: float | None = Field(None, gt=0, description="Min-SNR loss weighting gamma (Hang et al. 2023; 5 is usual).")
    seed: int = 0
    # bookkeeping
    output_dir: Path = Path("dreambooth-output")
    checkpointing_steps: int = Field(100, gt=0, description="Optimizer steps between resumable checkpoints.")
    checkpoints_total_limit: int = Field(3, gt=0, description="Keep the newest K checkpoints.")
    loss_every: int = Field(10, gt=0, description="Steps averaged into each point of the loss curve.")
    validation: ValidationConfig = ValidationConfig()
    logger: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    save_single_file: bool = Field(False, description="Full fine-tune: also write one LDM-layout .safetensors.")
    # where it runs
    accelerator: str = Field("auto", description="Lightning accelerator: auto, cpu, gpu, mps, ...")
    devices: int | str = Field(1, description="Processes/devices, e.g. 2, or 'auto'.")
    strategy: str = Field("auto", description="Lightning strategy: auto, ddp, ddp_spawn, fsdp, deepspeed, ...")
    num_nodes: int = Field(1, gt=0)

    @property
    def resolved_class_noun(self) -> str | None:
        if self.class_noun:
            return self.class_noun
        return self.class_prompt.split()[-1] if self.class_prompt else None

    @property
    def lora_name(self) -> str:
        return self.lora.name or self.output_dir.resolve().name

    @property
    def class_dir(self) -> Path:
        return self.class_data_dir or self.output_dir / "class_images"

    @model_validator(mode="after")
    def _prior_needs_class(self) -> DreamBoothConfig:
        if not self.with_prior_preservation:
            return self
        if not self.class_prompt:
            raise ValueError("with_prior_preservation needs a class_prompt (or set with_prior_preservation=false)")
        noun = self.resolved_class_noun
        if not re.search(rf"\b{re.escape(noun)}\b", self.instance_prompt):
            raise ValueError(
                f"instance_prompt {self.instance_prompt!r} does not contain the class noun {noun!r} of the class prompt; "
                f'prior preservation needs both, e.g. "a sks {noun}"'
            )
        return self


def load_dreambooth_config(path: Path | None, overrides: Sequence[str] = ()) -> DreamBoothConfig:
    """Read ``path`` (YAML; may be None) and apply ``key.sub=value`` overrides.

    Raises ``ValueError`` with one line naming the bad field, before anything runs."""
    return load_config(DreamBoothConfig, path, overrides)
