"""The whole tiny-SD recipe: VAE, then UNet + text encoder, then one diffusers folder.

Every stage is resumable: a finished stage is skipped, an interrupted one continues
from its last Lightning checkpoint. Run it with ``dreamloom train tiny-sd``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from dreamloom.eval.prompts import held_out_scenes
from dreamloom.shapeworld import render_array, score_image
from dreamloom.train.tiny_sd.config import TinySdConfig
from dreamloom.train.tiny_sd.components import build_tokenizer
from dreamloom.train.tiny_sd.data import ImageDataset, LatentCaptionDataset, rendered_shapeworld
from dreamloom.train.tiny_sd.unet_stage import AdherenceCurve, UnetModule
from dreamloom.train.tiny_sd.vae_stage import VaeModule, calibrate_scaling_factor, encode_images, reconstruct


def stage_trainer(cfg: TinySdConfig, stage: str, max_steps: int, callbacks: list | None = None) -> pl.Trainer:
    """A CPU/GPU-agnostic Lightning trainer that checkpoints ``stage`` every few hundred steps."""
    checkpoints = ModelCheckpoint(
        dirpath=cfg.output_dir / stage / "checkpoints", every_n_train_steps=cfg.checkpoint_every, save_last=True
    )
    return pl.Trainer(
        max_steps=max_steps,
        logger=TensorBoardLogger(cfg.output_dir / "logs", name=stage),
        callbacks=[checkpoints, *(callbacks or [])],
        log_every_n_steps=25,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def last_checkpoint(cfg: TinySdConfig, stage: str) -> str | None:
    path = cfg.output_dir / stage / "checkpoints" / "last.ckpt"
    return str(path) if path.exists() else None


def training_images(cfg: TinySdConfig) -> tuple[np.ndarray, list[str]]:
    return rendered_shapeworld(cfg.output_dir / "data", cfg.data.train_scenes, cfg.data.seed, cfg.data.resolution)


def reconstruction_adherence(vae: AutoencoderKL, count: int = 300) -> dict[str, float]:
    """Share of held-out scenes the scorer still reads right after a VAE round trip."""
    report = {}
    for n_objects in (1, 2, 3):
        scenes = held_out_scenes(count, n_objects)
        rebuilt = reconstruct(vae, np.stack([render_array(s) for s in scenes]))
        report[f"{n_objects}-object"] = float(np.mean([score_image(img, s.caption()).correct for img, s in zip(rebuilt, scenes)]))
    return report


def run_vae_stage(cfg: TinySdConfig) -> AutoencoderKL:
    """Train (or resume, or load the finished) VAE; record how readable its reconstructions are."""
    done = cfg.output_dir / "vae" / "final"
    if (done / "config.json").exists():
        return AutoencoderKL.from_pretrained(done)
    images, _ = training_images(cfg)
    module = VaeModule(cfg)
    loader = DataLoader(ImageDataset(images), batch_size=cfg.vae.batch_size, shuffle=True, drop_last=True)
    stage_trainer(cfg, "vae", cfg.vae.steps).fit(module, loader, ckpt_path=last_checkpoint(cfg, "vae"))
    vae = module.vae.eval()
    factor = calibrate_scaling_factor(vae, images[:2048])
    report = {"scaling_factor": factor, "reconstruction_correct": reconstruction_adherence(vae)}
    vae.save_pretrained(done)
    (cfg.output_dir / "vae" / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return vae


def training_latents(cfg: TinySdConfig, vae: AutoencoderKL, images: np.ndarray) -> torch.Tensor:
    """Scaled latent means of every training image, encoded once and cached."""
    path = cfg.output_dir / "unet" / "latents.pt"
    if path.exists():
        return torch.load(path)
    latents = encode_images(vae, images) * vae.config.scaling_factor
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(latents, path)
    return latents


def run_unet_stage(cfg: TinySdConfig, vae: AutoencoderKL) -> StableDiffusionPipeline:
    """Train (or resume) UNet + text encoder; return the EMA pipeline."""
    tokenizer = build_tokenizer(cfg.text_encoder.max_length)
    images, captions = training_images(cfg)
    latents = training_latents(cfg, vae, images)
    input_ids = tokenizer(
        captions, padding="max_length", max_length=cfg.text_encoder.max_length, truncation=True, return_tensors="pt"
    ).input_ids
    module = UnetModule(cfg, tokenizer, latent_size=latents.shape[-1])
    loader = DataLoader(
        LatentCaptionDataset(latents, input_ids), batch_size=cfg.unet.batch_size, shuffle=True, drop_last=True
    )
    curve = AdherenceCurve(vae, tokenizer, cfg.output_dir / "unet", cfg.eval_every, {1: 100, 2: 50})
    trainer = stage_trainer(cfg, "unet", cfg.unet.steps, callbacks=[curve])
    trainer.fit(module, loader, ckpt_path=last_checkpoint(cfg, "unet"))
    return module.ema_pipeline(vae, tokenizer)


def run_recipe(cfg: TinySdConfig) -> Path:
    """Run every stage that is not finished yet; returns the final diffusers folder."""
    pl.seed_everything(cfg.seed, workers=True)
    vae = run_vae_stage(cfg)
    final = cfg.output_dir / "pipeline"
    if not (final / "model_index.json").exists():
        run_unet_stage(cfg, vae).save_pretrained(final, safe_serialization=True)
    return final
