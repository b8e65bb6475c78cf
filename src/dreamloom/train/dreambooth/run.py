"""One DreamBooth run: check the inputs, fill the class images, train with Lightning, write
the outputs, and say where everything went.

Order matters for the user: every input is checked (images, prompts, model, resume
point) before the first step, so a mistake costs seconds, not a run.
"""

from __future__ import annotations

import functools
import json
import re
import resource
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from diffusers import StableDiffusionPipeline
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from torch.utils.data import DataLoader

from dreamloom.config import Settings
from dreamloom.models.export import export_single_file
from dreamloom.models.lora import save_lora_weights
from dreamloom.models.manager import ModelManager
from dreamloom.train.curves import LossCurve, drop_after
from dreamloom.train.dreambooth.callbacks import AtomicCheckpointIO, StepProgressBar, ValidationSamples
from dreamloom.train.dreambooth.class_images import class_prompts, ensure_class_images
from dreamloom.train.dreambooth.config import DreamBoothConfig
from dreamloom.train.dreambooth.data import BatchRecipe, DreamBoothBatches, Example, find_examples
from dreamloom.train.dreambooth.module import DreamBoothModule, eight_bit_adamw

# The frozen VAE (and text encoder) are in eval mode on purpose.
warnings.filterwarnings("ignore", r".*module\(s\) in eval mode at the start of training.*")
_STEP = re.compile(r"step=(\d+)\.ckpt$")


@dataclass
class DreamBoothResult:
    """Where the run's outputs went, and what it cost."""

    outputs: dict[str, Path] = field(default_factory=dict)
    steps: int = 0
    processes: int = 1
    minutes: float = 0.0
    peak_rss_mb: float = 0.0

    def to_dict(self) -> dict:
        return {"outputs": {k: str(v) for k, v in self.outputs.items()}, "steps": self.steps,
                "processes": self.processes,
                "minutes": round(self.minutes, 3), "peak_rss_mb": round(self.peak_rss_mb, 1)}


def checkpoints(cfg: DreamBoothConfig) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = cfg.output_dir / "checkpoints"
    found = [p for p in folder.glob("step=*.ckpt") if _STEP.search(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(_STEP.search(p.name).group(1)))


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def resume_point(cfg: DreamBoothConfig, resume: str | None) -> Path | None:
    """``resume`` as a checkpoint path: None, "latest" (None if the run has none yet), or a
    file. A fresh start over an existing run's checkpoints is refused, not overwritten."""
    if resume is None:
        if checkpoints(cfg):
            raise ValueError(f"{cfg.output_dir} already holds a run's checkpoints; pass --resume latest to "
                             "continue it, or choose another output_dir")
        return None
    if resume == "latest":
        found = checkpoints(cfg)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {resume}")
    return path


def load_base(cfg: DreamBoothConfig) -> StableDiffusionPipeline:
    """The base model in float32 on the CPU (Lightning moves it to the accelerator)."""
    settings = Settings.from_env(device="cpu", dtype="float32")
    pipeline = ModelManager(settings).get(cfg.base_model, allow_paths=True).pipeline
    if not isinstance(pipeline, StableDiffusionPipeline):
        raise ValueError(f"DreamBooth trains Stable Diffusion 1.x/2.x pipelines; {cfg.base_model} loads as "
                         f"{type(pipeline).__name__}")
    return pipeline


def native_resolution(pipeline: StableDiffusionPipeline) -> int:
    return pipeline.unet.config.sample_size * pipeline.vae_scale_factor


def batch_recipe(cfg: DreamBoothConfig, base: StableDiffusionPipeline, resolution: int) -> BatchRecipe:
    """What every batch of this run needs from the config and the model."""
    latent = resolution // base.vae_scale_factor
    return BatchRecipe(
        batch_size=cfg.train_batch_size, resolution=resolution, center_crop=cfg.center_crop,
        random_flip=cfg.random_flip, latent_shape=(base.vae.config.latent_channels, latent, latent),
        num_train_timesteps=base.scheduler.config.num_train_timesteps, offset_noise=cfg.offset_noise, seed=cfg.seed,
    )


class DreamBoothTraining(DreamBoothModule):
    """The module plus its data: the loader is built after Lightning restored a checkpoint,
    so it starts at the first batch the resumed run has not seen."""

    def __init__(self, cfg: DreamBoothConfig, base: StableDiffusionPipeline, instances: list[Example],
                 classes: list[Example], resolution: int):
        super().__init__(cfg, base)
        self.instances, self.classes = instances, classes
        self.recipe = batch_recipe(cfg, base, resolution)

    def train_dataloader(self) -> DataLoader:
        tokenize = functools.partial(_token_ids, self.tokenizer)
        start = self.trainer.global_step * self.trainer.accumulate_grad_batches
        batches = DreamBoothBatches(self.instances, self.classes, tokenize, self.recipe, self.global_rank, start)
        return DataLoader(batches, batch_size=None)


def _token_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def make_logger(cfg: DreamBoothConfig) -> Logger | bool:
    if cfg.logger == "tensorboard":
        return TensorBoardLogger(cfg.output_dir, name="logs")
    if cfg.logger == "wandb":
        try:
            import wandb  # noqa: F401
            from pytorch_lightning.loggers import WandbLogger
        except ImportError:
            raise ValueError("logger=wandb needs wandb: pip install 'dreamloom[wandb]'") from None
        return WandbLogger(project="dreamloom-dreambooth", save_dir=str(cfg.output_dir))
    return False


def make_trainer(cfg: DreamBoothConfig, logger: Logger | bool, extra: Sequence[pl.Callback] = ()) -> pl.Trainer:
    checkpointing = ModelCheckpoint(
        dirpath=cfg.output_dir / "checkpoints", filename="{step:06d}", every_n_train_steps=cfg.checkpointing_steps,
        save_top_k=cfg.checkpoints_total_limit, monitor="step", mode="max",
    )
    callbacks = [
        checkpointing,
        LossCurve(cfg.output_dir / "loss.jsonl", "train/loss", every=cfg.loss_every),
        ValidationSamples(cfg.validation, cfg.output_dir / "samples"),
        StepProgressBar(),
        *extra,
    ]
    return pl.Trainer(
        max_steps=cfg.max_steps, max_epochs=-1, accelerator=cfg.accelerator, devices=cfg.devices,
        strategy=cfg.strategy, num_nodes=cfg.num_nodes, precision=cfg.mixed_precision,
        accumulate_grad_batches=cfg.gradient_accumulation_steps, gradient_clip_val=cfg.max_grad_norm,
        logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()], log_every_n_steps=cfg.loss_every,
        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
    )


def save_outputs(cfg: DreamBoothConfig, module: DreamBoothModule, base: StableDiffusionPipeline) -> dict[str, Path]:
    """The trained model: LoRA files, or a diffusers folder (and a single file on request)."""
    outputs: dict[str, Path] = {}
    if cfg.lora.enabled:
        metadata = {"base_model": cfg.base_model, "instance_prompt": cfg.instance_prompt, "rank": str(cfg.lora.rank),
                    "alpha": str(cfg.lora.alpha), "steps": str(cfg.max_steps)}
        files = save_lora_weights(cfg.output_dir / cfg.lora_name, module.unet,
                                  module.text_encoder if cfg.train_text_encoder else None, metadata)
        outputs.update({"LoRA (diffusers)": files.diffusers, "LoRA (kohya / AUTOMATIC1111)": files.kohya})
    else:
        folder = cfg.output_dir / "pipeline"
        base.save_pretrained(folder, safe_serialization=True)  # base's UNet/text encoder are the trained ones
        outputs["model (diffusers folder)"] = folder
        if cfg.save_single_file:
            outputs["model (single file)"] = export_single_file(folder, cfg.output_dir / "model.safetensors")
    return outputs


def run_dreambooth(
    cfg: DreamBoothConfig,
    resume: str | None = None,
    class_progress: Callable[[int, int], None] | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> DreamBoothResult | None:
    """Train as ``cfg`` says (continuing from ``resume``: a checkpoint path or "latest").
    ``callbacks`` join the trainer's own (a job runner's progress and cancel hooks).

    Returns what was written, on the global-zero process; None on the other DDP processes."""
    started = time.perf_counter()
    instances = find_examples(cfg.instance_data_dir, cfg.instance_prompt)
    checkpoint = resume_point(cfg, resume)
    if cfg.use_8bit_adam:
        eight_bit_adamw()  # fails now, not after the class images
    logger = make_logger(cfg)
    base = load_base(cfg)
    resolution = cfg.resolution or native_resolution(base)
    if resolution % base.vae_scale_factor:
        raise ValueError(f"resolution {resolution} is not a multiple of the VAE's factor {base.vae_scale_factor}")
    classes: list[Example] = []
    if cfg.with_prior_preservation:
        prompts = class_prompts(instances, cfg.instance_prompt, cfg.class_prompt)
        ensure_class_images(cfg.class_dir, prompts, cfg.num_class_images, cfg.base_model, cfg.class_image_steps,
                            progress=class_progress)
        classes = find_examples(cfg.class_dir, cfg.class_prompt)[: cfg.num_class_images]
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = DreamBoothTraining(cfg, base, instances, classes, resolution)
    trainer = make_trainer(cfg, logger, callbacks)
    drop_after(cfg.output_dir / "loss.jsonl", checkpoint_step(checkpoint) if checkpoint else 0)
    trainer.fit(module, ckpt_path=str(checkpoint) if checkpoint else None)
    if not trainer.is_global_zero:
        return None
    result = DreamBoothResult(steps=trainer.global_step, processes=trainer.world_size)
    result.outputs = save_outputs(cfg, module, base)
    result.outputs["checkpoints"] = cfg.output_dir / "checkpoints"
    result.outputs["loss curve"] = cfg.output_dir / "loss.png"
    if cfg.validation.prompts:
        result.outputs["sample grids"] = cfg.output_dir / "samples"
    if isinstance(trainer.logger, TensorBoardLogger):
        result.outputs["TensorBoard logs"] = Path(trainer.logger.log_dir)
    result.minutes = (time.perf_counter() - started) / 60
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (cfg.output_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result
