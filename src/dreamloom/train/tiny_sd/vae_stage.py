"""Stage 1: the AutoencoderKL, trained on ShapeWorld images with edge-weighted L1 + MSE + a tiny KL term."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from dreamloom.eval.prompts import held_out_scenes
from dreamloom.shapeworld import render_array, score_image
from dreamloom.train.tiny_sd.components import build_vae
from dreamloom.train.tiny_sd.config import TinySdConfig
from dreamloom.train.tiny_sd.data import to_model_range
from dreamloom.train.curves import append_and_plot, measurement_due
from dreamloom.train.schedules import warmup_cosine


def edge_mask(images: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """1 where a pixel's 3x3 neighbourhood holds more than one colour (N,1,H,W), else 0."""
    spread = F.max_pool2d(images, 3, stride=1, padding=1) + F.max_pool2d(-images, 3, stride=1, padding=1)
    return (spread.amax(dim=1, keepdim=True) > threshold).to(images.dtype)


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """L1 + MSE with pixels at colour edges weighted ``1 + edge_weight``.

    Flat regions are learned in a few hundred steps; what a plain loss is slow to learn is
    the thin parts, such as a small star's points, which are nothing but edge pixels and
    decide whether the scorer reads a star or a pentagon-ish blob."""
    weight = 1 + edge_weight * edge_mask(target)
    error = reconstruction - target
    return (weight * (error.abs() + error.square())).mean() / weight.mean()


class VaeModule(pl.LightningModule):
    """Reconstruction training; the KL weight only keeps latents bounded (as in SD's VAE)."""

    def __init__(self, cfg: TinySdConfig):
        super().__init__()
        self.save_hyperparameters(cfg.model_dump(mode="json"))
        self.cfg = cfg
        self.vae = build_vae(cfg)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        posterior = self.vae.encode(batch).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        l1 = F.l1_loss(reconstruction, batch)
        kl = posterior.kl().mean()
        loss = reconstruction_loss(reconstruction, batch, self.cfg.vae.edge_weight) + self.cfg.vae.kl_weight * kl
        self.log_dict({"vae/loss": loss, "vae/l1": l1, "vae/kl": kl}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.vae.parameters(), lr=self.cfg.vae.lr, weight_decay=0.0)
        scheduler = warmup_cosine(optimizer, warmup=100, total=self.cfg.vae.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Latent means of uint8 NHWC images, unscaled."""
    vae.eval()
    chunks = [vae.encode(to_model_range(images[i : i + batch_size])).latent_dist.mean for i in range(0, len(images), batch_size)]
    return torch.cat(chunks)


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: np.ndarray) -> np.ndarray:
    """Encode (mean) and decode uint8 images: what the UNet's world looks like after the VAE."""
    decoded = vae.decode(encode_images(vae, images)).sample
    return ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def reconstruction_adherence(vae: AutoencoderKL, count: int = 300) -> dict[str, float]:
    """Share of held-out scenes the scorer still reads right after a VAE round trip.

    This is the ceiling of the whole pipeline's adherence: the UNet can only draw what
    the decoder can draw."""
    report = {}
    for n_objects in (1, 2, 3):
        scenes = held_out_scenes(count, n_objects)
        rebuilt = reconstruct(vae, np.stack([render_array(s) for s in scenes]))
        report[f"{n_objects}-object"] = float(np.mean([score_image(img, s.caption()).correct for img, s in zip(rebuilt, scenes)]))
    return report


class ReconstructionCurve(pl.Callback):
    """Every ``every`` steps, append the reconstruction adherence (100 scenes a group) to ``path``
    (JSON lines) and redraw its chart beside it."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = path, every

    def on_train_batch_end(self, trainer: pl.Trainer, module: VaeModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not measurement_due(trainer, self.every):
            return
        report = reconstruction_adherence(module.vae, count=100)
        module.vae.train()
        append_and_plot(self.path, {"step": step, **report}, "scenes read right after a VAE round trip", "share")
        for group, value in report.items():
            module.log(f"reconstruction/{group}", value)


def calibrate_scaling_factor(vae: AutoencoderKL, images: np.ndarray) -> float:
    """1/std of the latents, so scaled latents have unit variance like SD's (0.18215 there)."""
    factor = float(1.0 / encode_images(vae, images).std())
    vae.register_to_config(scaling_factor=factor)
    return factor


class DecoderModule(pl.LightningModule):
    """Stage 3: fine-tune the decoder alone on the frozen encoder's latents.

    The latents the UNet learned on do not change, so this sharpens every image the
    pipeline draws without retraining the UNet (as Stable Diffusion's ft-MSE VAE did).
    """

    def __init__(self, cfg: TinySdConfig, vae: AutoencoderKL):
        super().__init__()
        self.save_hyperparameters(cfg.model_dump(mode="json"))
        self.cfg = cfg
        self.vae = vae
        self.vae.encoder.requires_grad_(False)
        self.vae.quant_conv.requires_grad_(False)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        with torch.no_grad():
            latents = self.vae.encode(batch).latent_dist.mean
        reconstruction = self.vae.decode(latents).sample
        l1 = F.l1_loss(reconstruction, batch)
        loss = reconstruction_loss(reconstruction, batch, self.cfg.vae.edge_weight)
        self.log_dict({"decoder/loss": loss, "decoder/l1": l1}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.vae.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.cfg.vae.decoder_lr, weight_decay=0.0)
        scheduler = warmup_cosine(optimizer, warmup=50, total=self.cfg.vae.decoder_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
