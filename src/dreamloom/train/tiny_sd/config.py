"""Typed configuration of the tiny-SD recipe, loaded from YAML with dotted overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dreamloom.configfile import load_config as load_typed_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    train_scenes: int = Field(100_000, gt=0, description="Scenes rendered once and reused every epoch.")
    seed: int = Field(1, description="Seed of the training scenes; evaluation uses other seeds.")
    resolution: int = Field(64, description="Image side in pixels; a multiple of 8.")


class TextEncoderConfig(_Strict):
    hidden_size: int = 128
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 512
    max_length: int = 32


class VaeConfig(_Strict):
    block_out_channels: list[int] = [16, 32, 64, 64]
    latent_channels: int = 8
    layers_per_block: int = 1
    norm_num_groups: int = 8
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    kl_weight: float = 1e-6
    edge_weight: float = Field(4.0, ge=0, description="Extra loss weight of pixels at colour edges (0: plain L1 + MSE).")
    decoder_steps: int = Field(0, ge=0, description="Decoder-only fine-tuning steps after the UNet stage (0: none).")
    decoder_lr: float = 5e-4


class UnetConfig(_Strict):
    block_out_channels: list[int] = [64, 128, 128]
    cross_attention: list[bool] = Field(
        [True, True, False],
        description="Per level (highest resolution first): whether its blocks attend to the text. "
        "Attention at the highest resolution costs the most and is often left out, as SDXL does.",
    )
    layers_per_block: int = 1
    attention_head_dim: int = 8
    steps: int = 10_000
    batch_size: int = 64
    lr: float = 1e-3
    text_encoder_lr: float = 5e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = Field(0.1, ge=0, le=1, description="Share of empty captions, for classifier-free guidance.")
    min_snr_gamma: float | None = Field(5.0, description="Min-SNR loss weighting (Hang et al. 2023); None disables.")
    prediction_type: str = "v_prediction"

    @model_validator(mode="after")
    def _one_flag_per_level(self) -> "UnetConfig":
        if len(self.cross_attention) != len(self.block_out_channels):
            raise ValueError(
                f"unet.cross_attention has {len(self.cross_attention)} flags for "
                f"{len(self.block_out_channels)} levels of unet.block_out_channels"
            )
        return self


class TinySdConfig(_Strict):
    output_dir: Path = Path("training/tiny-sd")
    seed: int = 0
    checkpoint_every: int = Field(500, description="Steps between resumable checkpoints.")
    eval_every: int = Field(1000, description="UNet steps between adherence measurements (and sample grids).")
    eval_prompts: int = Field(100, gt=0, description="Held-out one-object prompts per measurement (half as many two-object).")
    data: DataConfig = DataConfig()
    text_encoder: TextEncoderConfig = TextEncoderConfig()
    vae: VaeConfig = VaeConfig()
    unet: UnetConfig = UnetConfig()


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> TinySdConfig:
    """The recipe from a YAML file (or the defaults) with ``key.sub=value`` overrides."""
    return load_typed_config(TinySdConfig, path, overrides)
