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

from dreamloom.train.curves import LossCurve
from dreamloom.train.tiny_sd.config import TinySdConfig
from dreamloom.train.tiny_sd.components import build_tokenizer
from dreamloom.train.tiny_sd.data import ImageDataset, LatentCaptionDataset, rendered_shapeworld
from dreamloom.train.tiny_sd.unet_stage import AdherenceCurve, UnetModule
from dreamloom.train.tiny_sd.vae_stage import (
    DecoderModule,
    ReconstructionCurve,
    VaeModule,
    calibrate_scaling_factor,
    encode_images,
    reconstruction_adherence,
)


def stage_trainer(cfg: TinySdConfig, stage: str, max_steps: int, callbacks: list | None = None) -> pl.Trainer:
    """A CPU/GPU-agnostic Lightning trainer that checkpoints ``stage`` every few hundred steps
    and keeps its loss curve (``<stage>/loss.jsonl`` and ``loss.png``)."""
    checkpoints = ModelCheckpoint(
        dirpath=cfg.output_dir / stage / "checkpoints", every_n_train_steps=cfg.checkpoint_every, save_last=True
    )
    loss = LossCurve(cfg.output_dir / stage / "loss.jsonl", f"{stage}/loss")
    return pl.Trainer(
        max_steps=max_steps,
        logger=TensorBoardLogger(cfg.output_dir / "logs", name=stage),
        callbacks=[checkpoints, loss, *(callbacks or [])],
        log_every_n_steps=25,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def last_checkpoint(cfg: TinySdConfig, stage: str) -> str | None:
    path = cfg.output_dir / stage / "checkpoints" / "last.ckpt"
    return str(path) if path.exists() else None


def training_images(cfg: TinySdConfig) -> tuple[np.ndarray, list[str]]:
    return rendered_shapeworld(cfg.output_dir / "data", cfg.data.train_scenes, cfg.data.seed, cfg.data.resolution)


def run_vae_stage(cfg: TinySdConfig) -> AutoencoderKL:
    """Train (or resume, or load the finished) VAE; record how readable its reconstructions are."""
    done = cfg.output_dir / "vae" / "final"
    if (done / "config.json").exists():
        return AutoencoderKL.from_pretrained(done)
    images, _ = training_images(cfg)
    module = VaeModule(cfg)
    loader = DataLoader(ImageDataset(images), batch_size=cfg.vae.batch_size, shuffle=True, drop_last=True)
    curve = ReconstructionCurve(cfg.output_dir / "vae" / "reconstruction_curve.jsonl", cfg.checkpoint_every)
    trainer = stage_trainer(cfg, "vae", cfg.vae.steps, callbacks=[curve])
    trainer.fit(module, loader, ckpt_path=last_checkpoint(cfg, "vae"))
    vae = module.vae.eval()
    factor = calibrate_scaling_factor(vae, images[:2048])
    report = {"scaling_factor": factor, "reconstruction_correct": reconstruction_adherence(vae)}
    vae.save_pretrained(done)
    (cfg.output_dir / "vae" / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return vae


def run_decoder_stage(cfg: TinySdConfig, vae: AutoencoderKL) -> AutoencoderKL:
    """Fine-tune (or resume, or load) the decoder on the frozen encoder; report readability."""
    done = cfg.output_dir / "decoder" / "final"
    if cfg.vae.decoder_steps == 0:
        return vae
    if (done / "config.json").exists():
        return AutoencoderKL.from_pretrained(done)
    images, _ = training_images(cfg)
    module = DecoderModule(cfg, vae)
    loader = DataLoader(ImageDataset(images), batch_size=cfg.vae.batch_size, shuffle=True, drop_last=True)
    stage_trainer(cfg, "decoder", cfg.vae.decoder_steps).fit(module, loader, ckpt_path=last_checkpoint(cfg, "decoder"))
    vae = module.vae.eval()
    report = {"reconstruction_correct": reconstruction_adherence(vae)}
    vae.save_pretrained(done)
    (cfg.output_dir / "decoder" / "report.json").write_text(json.dumps(report, indent=2))
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


def pipeline_from_checkpoint(cfg: TinySdConfig, vae: AutoencoderKL, checkpoint: str | None = None) -> StableDiffusionPipeline:
    """The EMA pipeline of a UNet-stage checkpoint (default: the last), without training."""
    checkpoint = checkpoint or last_checkpoint(cfg, "unet")
    if checkpoint is None:
        raise FileNotFoundError(f"no UNet checkpoint under {cfg.output_dir / 'unet' / 'checkpoints'}")
    tokenizer = build_tokenizer(cfg.text_encoder.max_length)
    latent_size = cfg.data.resolution // 2 ** (len(cfg.vae.block_out_channels) - 1)
    module = UnetModule(cfg, tokenizer, latent_size)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    module.on_load_checkpoint(state)
    return module.ema_pipeline(vae, tokenizer)


def run_unet_stage(cfg: TinySdConfig, vae: AutoencoderKL) -> None:
    """Train (or resume) UNet + text encoder; a finished run resumes as a no-op."""
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
    curve = AdherenceCurve(vae, tokenizer, cfg.output_dir / "unet", cfg.eval_every, {1: cfg.eval_prompts, 2: max(1, cfg.eval_prompts // 2)})
    trainer = stage_trainer(cfg, "unet", cfg.unet.steps, callbacks=[curve])
    trainer.fit(module, loader, ckpt_path=last_checkpoint(cfg, "unet"))


STAGES = ("all", "vae", "unet", "decoder", "assemble")


def run_recipe(cfg: TinySdConfig, stage: str = "all") -> Path:
    """Run every stage that is not finished yet (or only ``stage``); returns the output folder.

    Stages: the VAE; the UNet with the text encoder on the VAE's latents; the decoder
    fine-tuned on the same latents; "assemble" writes the pipeline of the last UNet
    checkpoint and the best VAE without training anything."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of: {', '.join(STAGES)}")
    pl.seed_everything(cfg.seed, workers=True)
    final = cfg.output_dir / "pipeline"
    vae = run_vae_stage(cfg) if stage in ("all", "vae", "unet", "decoder") else None
    if stage in ("all", "unet"):
        run_unet_stage(cfg, vae)
    if stage in ("all", "decoder"):
        vae = run_decoder_stage(cfg, vae)
    if stage in ("all", "assemble"):
        tuned = cfg.output_dir / "decoder" / "final"
        vae = AutoencoderKL.from_pretrained(tuned if tuned.exists() else cfg.output_dir / "vae" / "final")
        pipeline_from_checkpoint(cfg, vae).save_pretrained(final, safe_serialization=True)
    return final if stage in ("all", "assemble") else cfg.output_dir
