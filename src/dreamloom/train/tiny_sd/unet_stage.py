"""Stage 2: the UNet and the CLIP text encoder, trained together on VAE latents.

v-prediction (Salimans & Ho 2022) with Min-SNR weighting (Hang et al. 2023), caption
dropout for classifier-free guidance (Ho & Salimans 2022), and an EMA of the weights,
which is what gets shipped.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline
from diffusers.training_utils import EMAModel, compute_snr
from transformers import CLIPTokenizer

from dreamloom.eval.adherence import measure_adherence
from dreamloom.images import make_grid
from dreamloom.train.curves import append_and_plot, measurement_due
from dreamloom.train.schedules import warmup_cosine
from dreamloom.train.tiny_sd.components import build_noise_scheduler, build_text_encoder, build_unet
from dreamloom.train.tiny_sd.config import TinySdConfig


class UnetModule(pl.LightningModule):
    def __init__(self, cfg: TinySdConfig, tokenizer: CLIPTokenizer, latent_size: int):
        super().__init__()
        self.save_hyperparameters(cfg.model_dump(mode="json"))
        self.cfg = cfg
        self.unet = build_unet(cfg, latent_size)
        self.text_encoder = build_text_encoder(cfg.text_encoder, tokenizer)
        self.noise_scheduler = build_noise_scheduler(cfg)
        empty = tokenizer([""], padding="max_length", max_length=cfg.text_encoder.max_length, return_tensors="pt")
        self.register_buffer("empty_ids", empty.input_ids[0], persistent=False)
        self.ema_unet = EMAModel(self.unet.parameters(), decay=cfg.unet.ema_decay)
        self.ema_text_encoder = EMAModel(self.text_encoder.parameters(), decay=cfg.unet.ema_decay)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        latents, input_ids = batch
        dropped = torch.rand(len(input_ids), device=self.device) < self.cfg.unet.caption_dropout
        input_ids = torch.where(dropped[:, None], self.empty_ids, input_ids)
        hidden = self.text_encoder(input_ids)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(latents),), device=self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.cfg.unet.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        prediction = self.unet(noisy, timesteps, hidden).sample
        per_sample = F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))
        if self.cfg.unet.min_snr_gamma is not None:
            snr = compute_snr(self.noise_scheduler, timesteps)
            weight = snr.clamp(max=self.cfg.unet.min_snr_gamma)
            weight = weight / (snr + 1) if self.cfg.unet.prediction_type == "v_prediction" else weight / snr
            per_sample = per_sample * weight
        loss = per_sample.mean()
        self.log("unet/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.ema_unet.step(self.unet.parameters())
        self.ema_text_encoder.step(self.text_encoder.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ema_unet"] = self.ema_unet.state_dict()
        checkpoint["ema_text_encoder"] = self.ema_text_encoder.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.ema_unet.load_state_dict(checkpoint["ema_unet"])
        self.ema_text_encoder.load_state_dict(checkpoint["ema_text_encoder"])

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            [
                {"params": self.unet.parameters(), "lr": self.cfg.unet.lr},
                {"params": self.text_encoder.parameters(), "lr": self.cfg.unet.text_encoder_lr},
            ],
            weight_decay=1e-2,
        )
        scheduler = warmup_cosine(optimizer, warmup=self.cfg.unet.warmup_steps, total=self.cfg.unet.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def ema_pipeline(self, vae: AutoencoderKL, tokenizer: CLIPTokenizer) -> StableDiffusionPipeline:
        """A standalone diffusers pipeline holding copies of the EMA weights."""
        unet, text_encoder = copy.deepcopy(self.unet).eval(), copy.deepcopy(self.text_encoder).eval()
        self.ema_unet.copy_to(unet.parameters())
        self.ema_text_encoder.copy_to(text_encoder.parameters())
        return StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=DPMSolverMultistepScheduler.from_config(self.noise_scheduler.config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def plain_diffusers_generate(pipeline: StableDiffusionPipeline, steps: int = 20, guidance: float = 7.0):
    """A ``GenerateFn`` running the plain diffusers pipeline with one generator per prompt."""

    def generate(prompts: list[str], seeds: list[int]):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return pipeline(
            prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generators, height=64, width=64
        ).images

    return generate


class AdherenceCurve(pl.Callback):
    """Every ``every`` steps, score the EMA model on held-out prompts and save a sample grid."""

    def __init__(self, vae: AutoencoderKL, tokenizer: CLIPTokenizer, out_dir: Path, every: int, counts: dict[int, int]):
        self.vae, self.tokenizer, self.out_dir, self.every, self.counts = vae, tokenizer, out_dir, every, counts

    @torch.no_grad()
    def on_train_batch_end(self, trainer, module: UnetModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not measurement_due(trainer, self.every):
            return
        pipeline = module.ema_pipeline(self.vae, self.tokenizer)
        pipeline.set_progress_bar_config(disable=True)
        generate = plain_diffusers_generate(pipeline)
        first_batch: list = []

        def recording(prompts: list[str], seeds: list[int]):
            images = generate(prompts, seeds)
            if not first_batch:
                first_batch.extend(images[:32])
            return images

        report = measure_adherence(recording, self.counts)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        make_grid(first_batch, columns=8).save(self.out_dir / f"samples-{step:06d}.png")
        append_and_plot(self.out_dir / "adherence_curve.jsonl", {"step": step, **report},
                        "held-out prompts drawn fully right (EMA weights)", "share correct")
        for group, values in report.items():
            module.log(f"adherence/{group}", values["correct"])
