"""Shared fixtures: tiny random Stable Diffusion pipelines built in code, and engines over them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

from dreamloom.config import Settings
from dreamloom.generate.engine import Engine
from dreamloom.train.tiny_sd.components import build_noise_scheduler, build_text_encoder, build_tokenizer, build_unet, build_vae
from dreamloom.train.tiny_sd.config import TinySdConfig

TINY = {
    "text_encoder": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "vae": {"block_out_channels": [8, 8, 16, 16], "latent_channels": 4, "norm_num_groups": 4},
    "unet": {"block_out_channels": [32, 32], "cross_attention": [True, False], "attention_head_dim": 8, "layers_per_block": 1},
}


def random_pipeline(seed: int = 0, **overrides) -> StableDiffusionPipeline:
    """A seeded, untrained SD pipeline of the tiny model's architecture (64x64, f8 VAE)."""
    cfg = TinySdConfig.model_validate({**TINY, **overrides})
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(cfg.text_encoder.max_length)
    return StableDiffusionPipeline(
        vae=build_vae(cfg),
        text_encoder=build_text_encoder(cfg.text_encoder, tokenizer),
        tokenizer=tokenizer,
        unet=build_unet(cfg, latent_size=8),
        scheduler=DPMSolverMultistepScheduler.from_config(build_noise_scheduler(cfg).config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models folder holding one random diffusers pipeline called "random-sd"."""
    folder = tmp_path_factory.mktemp("models")
    random_pipeline().save_pretrained(folder / "random-sd", safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def engine(models_dir, tmp_path_factory) -> Engine:
    return Engine(Settings(models_dir=models_dir, outputs_dir=tmp_path_factory.mktemp("outputs"), device="cpu"))
