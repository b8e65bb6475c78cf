"""What a DreamBooth run shows and keeps while it trains: a step progress bar, sample
grids (PNG and TensorBoard), and checkpoints that an interruption cannot corrupt."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from dreamloom.images import make_grid
from dreamloom.train.curves import measurement_due
from dreamloom.train.dreambooth.config import ValidationConfig


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary name and rename it into place, so a run
    killed while saving leaves the previous checkpoints intact and no half-written file."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, path)


class StepProgressBar(TQDMProgressBar):
    """Lightning's bar counted in optimizer steps of the whole run (resumed runs start
    where they left off), with the loss and it/s."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *_) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.initial = trainer.global_step
        bar.n = trainer.global_step
        bar.set_description("dreambooth")

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is not None and trainer.global_step != bar.n:
            bar.update(trainer.global_step - bar.n)
            bar.set_postfix(self.get_metrics(trainer, module))


def sample_pipeline(module: pl.LightningModule) -> StableDiffusionPipeline:
    """A pipeline over the module's live weights (adapters included), for sampling."""
    pipeline = StableDiffusionPipeline(
        vae=module.vae, text_encoder=module.text_encoder, tokenizer=module.tokenizer, unet=module.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(module.noise_scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@torch.no_grad()
def sample_grid(module: pl.LightningModule, cfg: ValidationConfig):
    """One row per validation prompt, ``num_images`` columns with seeds 0..n-1."""
    was_training = module.training
    module.eval()
    pipeline = sample_pipeline(module)
    images = []
    for prompt in cfg.prompts:
        generators = [torch.Generator().manual_seed(seed) for seed in range(cfg.num_images)]
        images += pipeline([prompt] * cfg.num_images, num_inference_steps=cfg.steps, guidance_scale=cfg.cfg_scale,
                           generator=generators).images
    module.train(was_training)
    module.on_train_start()  # frozen parts back in eval mode
    return make_grid(images, columns=cfg.num_images)


class ValidationSamples(pl.Callback):
    """Every ``cfg.every`` steps and at the end, draw the validation prompts into
    ``samples/step-NNNNNN.png`` and the TensorBoard image tab (global rank 0 only)."""

    def __init__(self, cfg: ValidationConfig, folder: Path):
        self.cfg, self.folder = cfg, Path(folder)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        if not self.cfg.prompts or not trainer.is_global_zero or not measurement_due(trainer, self.cfg.every):
            return
        if (trainer.global_step == 0) or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # only right after an optimizer step
        grid = sample_grid(module, self.cfg)
        self.folder.mkdir(parents=True, exist_ok=True)
        grid.save(self.folder / f"step-{trainer.global_step:06d}.png")
        if isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_image("validation", np.asarray(grid), trainer.global_step, dataformats="HWC")
