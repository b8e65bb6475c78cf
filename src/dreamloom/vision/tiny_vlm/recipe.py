"""The dreamloom-tiny-vlm recipe: a tiny ``Llama4ForConditionalGeneration`` trained from
scratch on ShapeWorld captions and questions. ``dreamloom train tiny-vlm``.

The loss is next-token cross-entropy on the answers only (the image and question are
context), plus the Switch-Transformer load-balancing term (Fedus et al. 2021) on the MoE
routers, so that all experts learn. Checkpoints every few hundred steps; ``resume``
continues one with exactly the batches it had not seen (``data.QuestionBatches``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, Timer
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader
from transformers import Llama4ForConditionalGeneration, Llama4Processor
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from dreamloom.train.curves import LossCurve, append_and_plot, drop_after, measurement_due
from dreamloom.train.dreambooth.callbacks import AtomicCheckpointIO, StepProgressBar
from dreamloom.train.schedules import warmup_cosine
from dreamloom.vision.processor import repair_llama4_output
from dreamloom.vision.tiny_vlm.config import TinyVlmConfig, llama4_config
from dreamloom.vision.tiny_vlm.data import QuestionBatches, training_scenes
from dreamloom.vision.tiny_vlm.evaluate import evaluate
from dreamloom.vision.tiny_vlm.experts import parameter_counts
from dreamloom.vision.tiny_vlm.folder import generation_config, write_model_folder
from dreamloom.vision.tiny_vlm.image_processor import tiny_processor
from dreamloom.vision.tiny_vlm.tokenizer import build_tokenizer

STAGE = "vlm"


def build_processor(cfg: TinyVlmConfig) -> Llama4Processor:
    return tiny_processor(build_tokenizer(), cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.pixel_shuffle_ratio)


class VlmModule(pl.LightningModule):
    """The model, its optimizer and its data: the loader is built after Lightning restored a
    checkpoint, so it starts at the first batch the run has not trained on."""

    def __init__(self, cfg: TinyVlmConfig, processor: Llama4Processor):
        super().__init__()
        self.save_hyperparameters(cfg.model_dump(mode="json"))
        self.cfg, self.processor = cfg, processor
        self.model = Llama4ForConditionalGeneration(llama4_config(cfg, processor.tokenizer))
        self.model.generation_config = generation_config(processor.tokenizer)  # for the held-out curve

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        output = self.model(**batch, output_router_logits=True)
        text = self.cfg.text
        balance = load_balancing_loss_func(output.router_logits, text.num_local_experts, text.num_experts_per_tok,
                                           batch["attention_mask"])
        self.log_dict({f"{STAGE}/loss": output.loss, f"{STAGE}/balance": balance}, prog_bar=True)
        return output.loss + self.cfg.router_aux_loss_coef * balance

    def configure_optimizers(self):
        params = list(self.model.parameters())
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.98))
        scheduler = warmup_cosine(optimizer, warmup=self.cfg.warmup_steps, total=self.cfg.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        data = self.cfg.data
        images, scenes = training_scenes(self.cfg.output_dir / "data", data.train_scenes, data.seed, self.cfg.vision.image_size)
        batches = QuestionBatches(self.processor, images, scenes, data.kinds, self.cfg.batch_size, data.turns,
                                  self.cfg.seed, start=self.trainer.global_step)
        return DataLoader(batches, batch_size=None)


class AccuracyCurve(pl.Callback):
    """Every ``every`` steps, append held-out exact match per kind and caption correctness to
    ``path`` (JSON lines) and redraw its chart."""

    def __init__(self, path: Path, every: int, per_group: int):
        self.path, self.every, self.per_group = path, every, per_group

    def on_train_batch_end(self, trainer: pl.Trainer, module: VlmModule, outputs, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero or not measurement_due(trainer, self.every):
            return
        report = evaluate(module.model, module.processor, self.per_group)
        module.model.train()
        record = {"step": trainer.global_step, **report["vqa_exact_match"], "caption": report["caption_parse"]["correct"]}
        append_and_plot(self.path, record, f"held-out exact match ({3 * self.per_group} scenes)", "share")


class _ProgressBar(StepProgressBar):
    def on_train_epoch_start(self, trainer: pl.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("tiny-vlm")


def checkpoint_dir(cfg: TinyVlmConfig) -> Path:
    return cfg.output_dir / STAGE / "checkpoints"


def resume_point(cfg: TinyVlmConfig, resume: str | None) -> Path | None:
    """``resume`` as a checkpoint: None (a fresh run; refused over an existing run's
    checkpoints rather than overwriting them), "latest" (the last checkpoint, if any), or a file."""
    last = checkpoint_dir(cfg) / "last.ckpt"
    if resume is None:
        if last.exists():
            raise ValueError(f"{cfg.output_dir} already holds a run's checkpoints; pass --resume latest to continue it, "
                             "or choose another output_dir")
        return None
    if resume == "latest":
        return last if last.exists() else None
    if not Path(resume).is_file():
        raise FileNotFoundError(f"no such checkpoint: {resume}")
    return Path(resume)


def make_trainer(cfg: TinyVlmConfig, timer: Timer) -> pl.Trainer:
    checkpoints = ModelCheckpoint(dirpath=checkpoint_dir(cfg), every_n_train_steps=cfg.checkpoint_every, save_last=True)
    callbacks = [
        checkpoints, timer, _ProgressBar(),
        LossCurve(cfg.output_dir / STAGE / "loss.jsonl", f"{STAGE}/loss"),
        AccuracyCurve(cfg.output_dir / STAGE / "accuracy_curve.jsonl", cfg.eval_every, cfg.eval_scenes),
    ]
    return pl.Trainer(
        max_steps=cfg.steps, max_epochs=-1, logger=TensorBoardLogger(cfg.output_dir / "logs", name=STAGE),
        callbacks=callbacks, plugins=[AtomicCheckpointIO()], gradient_clip_val=1.0, log_every_n_steps=25,
        enable_model_summary=False, num_sanity_val_steps=0,
    )


def run_recipe(cfg: TinyVlmConfig, resume: str | None = None) -> Path:
    """Train (or continue, see ``resume_point``), write the model folder to ``output_dir/model``
    and measure it on held-out scenes into ``output_dir/report.json``; returns the folder."""
    checkpoint = resume_point(cfg, resume)
    repair_llama4_output()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    processor = build_processor(cfg)
    module = VlmModule(cfg, processor)
    step = int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]) if checkpoint else 0
    for curve in ("loss.jsonl", "accuracy_curve.jsonl"):
        drop_after(cfg.output_dir / STAGE / curve, step)
    timer = Timer(verbose=False)
    trainer = make_trainer(cfg, timer)
    trainer.fit(module, ckpt_path=str(checkpoint) if checkpoint else None)

    model = module.model.eval()
    folder = write_model_folder(model, processor, cfg.output_dir / "model")
    report = {
        "steps": trainer.global_step,
        "train_seconds": round(timer.time_elapsed("train")),
        "torch_threads": torch.get_num_threads(),
        "parameters": parameter_counts(model),
        "weights_bytes": (folder / "model.safetensors").stat().st_size,
        **evaluate(model, processor, cfg.eval_scenes),
    }
    (cfg.output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return folder
