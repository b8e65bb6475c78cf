"""The dreamloom-tiny-vlm recipe: a tiny ``Llama4ForConditionalGeneration`` trained from
scratch on ShapeWorld, or fine-tuned from a finished run (``init_from``). ``dreamloom train tiny-vlm``.

Stage 1 (``vision_stage``): the vision encoder learns what lies in each image token's
cell. Stage 2: the whole model learns captions and answers. Its loss is next-token
cross-entropy on the answers only (the image and questions are context), plus the
Switch-Transformer load-balancing term (Fedus et al. 2021) on the MoE routers, so that all
experts learn, plus stage 1's cell read-out, which keeps the image tokens saying what
lies where. The read-out head is training-only, not part of the model. Each stage
checkpoints every few hundred steps; ``resume`` continues with exactly the batches it
had not seen, and a finished stage 1 is not run again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, Timer
from pytorch_lightning.loggers import TensorBoardLogger
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from transformers import Llama4ForConditionalGeneration, Llama4Processor
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from dreamloom.eval.prompts import held_out_scenes
from dreamloom.shapeworld import Scene, render
from dreamloom.train.curves import LossCurve, append_and_plot, drop_after, measurement_due
from dreamloom.train.dreambooth.callbacks import AtomicCheckpointIO, StepProgressBar
from dreamloom.train.schedules import warmup_cosine
from dreamloom.vision.processor import repair_llama4_output
from dreamloom.vision.tiny_vlm import vision_stage
from dreamloom.vision.tiny_vlm.config import TinyVlmConfig, llama4_config
from dreamloom.vision.tiny_vlm.data import QuestionBatches, training_scenes
from dreamloom.vision.tiny_vlm.evaluate import evaluate
from dreamloom.vision.tiny_vlm.experts import parameter_counts
from dreamloom.vision.tiny_vlm.folder import generation_config, write_model_folder
from dreamloom.vision.tiny_vlm.image_processor import tiny_processor
from dreamloom.vision.tiny_vlm.tokenizer import build_tokenizer
from dreamloom.vision.tiny_vlm.vision_stage import CellHead, VisionModule, cell_shape_accuracy

STAGE = "vlm"


def build_processor(cfg: TinyVlmConfig) -> Llama4Processor:
    return tiny_processor(build_tokenizer(), cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.pixel_shuffle_ratio)


class VlmModule(pl.LightningModule):
    """Stage 2: the whole model, its optimizer and its data. The loader is built after
    Lightning restored a checkpoint, so it starts at the first batch the run has not seen."""

    def __init__(self, cfg: TinyVlmConfig, processor: Llama4Processor, model: Llama4ForConditionalGeneration,
                 head: CellHead, images: np.ndarray, scenes: list[Scene]):
        super().__init__()
        self.cfg, self.processor, self.model, self.cell_head = cfg, processor, model, head
        self.images, self.scenes = images, scenes
        self.model.generation_config = generation_config(processor.tokenizer)  # for the held-out curve
        self.model.multi_modal_projector.register_forward_hook(self._keep_image_tokens)
        self._image_tokens: torch.Tensor | None = None

    def _keep_image_tokens(self, projector: nn.Module, inputs, output: torch.Tensor) -> None:
        # what replaces the <|patch|> embeddings, as (images x tokens, hidden): transformers 5.24
        # projects (images, tokens, hidden) at once, earlier versions the flattened tokens
        self._image_tokens = output.flatten(0, -2)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        shapes, colours = batch.pop("cell_shapes"), batch.pop("cell_colours")
        output = self.model(**batch, output_router_logits=True)
        text = self.cfg.text
        balance = load_balancing_loss_func(output.router_logits, text.num_local_experts, text.num_experts_per_tok,
                                           batch["attention_mask"])
        cells = self.cell_head.loss(self._image_tokens, shapes, colours)
        self.log_dict({f"{STAGE}/loss": output.loss, f"{STAGE}/balance": balance, f"{STAGE}/cells": cells}, prog_bar=True)
        return output.loss + self.cfg.router_aux_loss_coef * balance + self.cfg.cell_loss_weight * cells

    def configure_optimizers(self):
        params = list(self.parameters())
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.98))
        scheduler = warmup_cosine(optimizer, warmup=self.cfg.warmup_steps, total=self.cfg.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        data = self.cfg.data
        batches = QuestionBatches(self.processor, self.images, self.scenes, data.kinds, self.cfg.batch_size, data.turns,
                                  self.cell_head.grid, self.cfg.seed, start=self.trainer.global_step,
                                  text_first=data.text_first, reworded=data.reworded)
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


class CellCurve(pl.Callback):
    """Every ``every`` steps of stage 1, append the held-out cell-shape accuracy to ``path``."""

    def __init__(self, path: Path, every: int, scenes: list[Scene]):
        self.path, self.every, self.scenes = path, every, scenes
        self.images = [render(s) for s in scenes]

    def on_train_batch_end(self, trainer: pl.Trainer, module: VisionModule, outputs, batch, batch_idx: int) -> None:
        if trainer.is_global_zero and measurement_due(trainer, self.every):
            accuracy = cell_shape_accuracy(module.model, module.head, module.image_processor, self.scenes, self.images)
            append_and_plot(self.path, {"step": trainer.global_step, "cell shape": accuracy},
                            f"held-out cells: shape read right ({len(self.scenes)} scenes)", "share")


class _ProgressBar(StepProgressBar):
    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def on_train_epoch_start(self, trainer: pl.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"tiny-vlm {self.stage}")


def last_checkpoint(cfg: TinyVlmConfig, stage: str) -> Path:
    return cfg.output_dir / stage / "checkpoints" / "last.ckpt"


def resume_points(cfg: TinyVlmConfig, resume: str | None) -> dict[str, Path | None]:
    """Each stage's checkpoint to continue from. ``resume``: None (a fresh run, refused over
    an existing run's checkpoints rather than overwriting them), "latest" (each stage's last
    checkpoint, if any), or a checkpoint file of either stage."""
    stages = (vision_stage.STAGE, STAGE)
    found = {stage: last_checkpoint(cfg, stage) for stage in stages}
    if resume is None:
        if any(path.exists() for path in found.values()):
            raise ValueError(f"{cfg.output_dir} already holds a run's checkpoints; pass --resume latest to continue it, "
                             "or choose another output_dir")
        return dict.fromkeys(stages)
    if resume == "latest":
        return {stage: path if path.exists() else None for stage, path in found.items()}
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {resume}")
    if path.parent.parent.name not in stages:
        raise ValueError(f"{resume} is not in a stage's checkpoints folder ({' or '.join(stages)}/checkpoints)")
    return {stage: path if stage == path.parent.parent.name else None for stage in stages}


def make_trainer(cfg: TinyVlmConfig, stage: str, steps: int, callbacks: list[pl.Callback]) -> pl.Trainer:
    """A Lightning trainer for ``stage``: atomic checkpoints, loss curve, progress bar in steps."""
    checkpoints = ModelCheckpoint(dirpath=cfg.output_dir / stage / "checkpoints", every_n_train_steps=cfg.checkpoint_every,
                                  save_last=True)
    loss = LossCurve(cfg.output_dir / stage / "loss.jsonl", f"{stage}/loss")
    return pl.Trainer(
        max_steps=steps, max_epochs=-1, logger=TensorBoardLogger(cfg.output_dir / "logs", name=stage),
        callbacks=[checkpoints, loss, _ProgressBar(stage), *callbacks], plugins=[AtomicCheckpointIO()],
        gradient_clip_val=1.0, log_every_n_steps=25, enable_model_summary=False, num_sanity_val_steps=0,
    )


def _fit(cfg: TinyVlmConfig, stage: str, steps: int, module: pl.LightningModule, checkpoint: Path | None,
         callbacks: list[pl.Callback], curves: tuple[str, ...]) -> tuple[pl.Trainer, Timer]:
    """Train ``module`` as ``stage`` from ``checkpoint``, after forgetting curve points past it."""
    step = int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]) if checkpoint else 0
    for curve in ("loss.jsonl", *curves):
        drop_after(cfg.output_dir / stage / curve, step)
    timer = Timer(verbose=False)
    trainer = make_trainer(cfg, stage, steps, [timer, *callbacks])
    trainer.fit(module, ckpt_path=str(checkpoint) if checkpoint else None)
    return trainer, timer


def run_vision_stage(cfg: TinyVlmConfig, module: VisionModule, checkpoint: Path | None) -> dict:
    """Stage 1, or its saved result when it finished before: the encoder's, projector's and
    head's weights (``vision/final.safetensors``) and its report."""
    folder = cfg.output_dir / vision_stage.STAGE
    final, report_path = folder / "final.safetensors", folder / "report.json"
    kept = ("vision_model.", "multi_modal_projector.")
    if final.exists():
        weights = load_file(final)
        module.model.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("model.")}, strict=False)
        module.head.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("head.")})
        return json.loads(report_path.read_text())
    scenes = [s for n in (1, 2, 3) for s in held_out_scenes(cfg.eval_scenes, n)]
    curve = CellCurve(folder / "cell_curve.jsonl", cfg.eval_every, scenes)
    trainer, timer = _fit(cfg, vision_stage.STAGE, cfg.vision_stage.steps, module, checkpoint, [curve], ("cell_curve.jsonl",))
    weights = {f"model.{k}": v for k, v in module.model.state_dict().items() if k.startswith(kept)}
    save_file({**weights, **{f"head.{k}": v for k, v in module.head.state_dict().items()}}, final)
    report = {"steps": trainer.global_step, "train_seconds": round(timer.time_elapsed("train")),
              "held_out_cell_shape_accuracy": round(cell_shape_accuracy(module.model, module.head, module.image_processor,
                                                                        scenes, curve.images), 4)}
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_recipe(cfg: TinyVlmConfig, resume: str | None = None) -> Path:
    """Run both stages (or continue them, see ``resume_points``), write the model folder to
    ``output_dir/model`` and measure it on held-out scenes into ``output_dir/report.json``;
    returns the folder."""
    checkpoints = resume_points(cfg, resume)
    repair_llama4_output()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    processor = build_processor(cfg)
    data = cfg.data
    images, scenes = training_scenes(cfg.output_dir / "data", data.train_scenes, data.seed, cfg.vision.image_size)
    head = CellHead(cfg.text.hidden_size, cfg.vision.grid)
    if cfg.init_from is not None:  # fine-tuning: the encoder has learned its cells already
        model = Llama4ForConditionalGeneration.from_pretrained(cfg.init_from)
        vision = {"init_from": str(cfg.init_from), "train_seconds": 0}
    else:
        model = Llama4ForConditionalGeneration(llama4_config(cfg, processor.tokenizer))
        vision = run_vision_stage(cfg, VisionModule(cfg, model, head, processor.image_processor, images, scenes),
                                  checkpoints[vision_stage.STAGE])
    module = VlmModule(cfg, processor, model, head, images, scenes)
    curve = AccuracyCurve(cfg.output_dir / STAGE / "accuracy_curve.jsonl", cfg.eval_every, cfg.eval_scenes)
    trainer, timer = _fit(cfg, STAGE, cfg.steps, module, checkpoints[STAGE], [curve], ("accuracy_curve.jsonl",))

    model = module.model.eval()
    folder = write_model_folder(model, processor, cfg.output_dir / "model")
    report = {
        "vision_stage": vision,
        "steps": trainer.global_step,
        "train_seconds": round(timer.time_elapsed("train")),
        "total_train_seconds": vision["train_seconds"] + round(timer.time_elapsed("train")),
        "torch_threads": torch.get_num_threads(),
        "parameters": parameter_counts(model),
        "weights_bytes": (folder / "model.safetensors").stat().st_size,
        **evaluate(model, processor, cfg.eval_scenes),
        "vqa_exact_match_text_first": evaluate(model, processor, cfg.eval_scenes, text_first=True)["vqa_exact_match"],
    }
    (cfg.output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return folder
