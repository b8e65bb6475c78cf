"""The dreamloom-tiny-clip recipe: a small ``CLIPModel`` trained contrastively on ShapeWorld.

It gives DreamBooth evaluation an image tower that ships with the package (CLIP-I, see
``dreamloom.eval.clip_embedding``). Training is CLIP's (Radford et al. 2021): the symmetric
InfoNCE loss over a batch of (image, caption) pairs with a learnable temperature. Resumable:
a second run continues from the last Lightning checkpoint. ``dreamloom train tiny-clip``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
import torch
from pydantic import BaseModel, ConfigDict, Field
from pytorch_lightning.callbacks import Timer
from torch.utils.data import DataLoader, TensorDataset
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from dreamloom.configfile import load_config as load_typed_config
from dreamloom.eval.clip_embedding import ClipEmbedder, normalize_pixels
from dreamloom.eval.prompts import held_out_scenes
from dreamloom.shapeworld import Scene, render
from dreamloom.shapeworld.vocab import OBJECT_COLOURS, SHAPES, SIZES
from dreamloom.train.curves import append_and_plot, measurement_due
from dreamloom.train.schedules import warmup_cosine
from dreamloom.train.tiny_sd.components import build_text_encoder, build_tokenizer
from dreamloom.train.tiny_sd.config import DataConfig, TextEncoderConfig
from dreamloom.train.tiny_sd.data import rendered_shapeworld
from dreamloom.train.tiny_sd.recipe import last_checkpoint, stage_trainer

STAGE = "clip"


class VisionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patch_size: int = Field(8, description="Patch side in pixels; 64x64 images give 64 patches.")
    hidden_size: int = 64
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 256


class TinyClipConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output_dir: Path = Path("training/tiny-clip")
    seed: int = 0
    steps: int = 800
    batch_size: int = Field(128, gt=1, description="Pairs per batch: each image's negatives are the other captions.")
    lr: float = 1e-3
    weight_decay: float = Field(0.1, description="AdamW decay of matrices; biases, norms and the temperature are not decayed.")
    warmup_steps: int = 100
    projection_dim: int = 64
    checkpoint_every: int = Field(200, description="Steps between resumable checkpoints.")
    eval_every: int = Field(200, description="Steps between held-out retrieval measurements.")
    eval_scenes: int = Field(100, gt=1, description="Held-out scenes per group (1, 2, 3 objects) in each measurement.")
    data: DataConfig = DataConfig(train_scenes=40_000)
    vision: VisionConfig = VisionConfig()
    text: TextEncoderConfig = TextEncoderConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> TinyClipConfig:
    """The recipe from a YAML file (or the defaults) with ``key.sub=value`` overrides."""
    return load_typed_config(TinyClipConfig, path, overrides)


def build_clip(cfg: TinyClipConfig, tokenizer: CLIPTokenizer) -> CLIPModel:
    """A randomly initialised ``CLIPModel``: a ViT over ``data.resolution`` images and a text
    tower configured as tiny-SD's (same tokenizer and special-token ids)."""
    text_config = build_text_encoder(cfg.text, tokenizer).config.to_dict()
    vision_config = {"image_size": cfg.data.resolution, **cfg.vision.model_dump()}
    return CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=cfg.projection_dim))


class ClipModule(pl.LightningModule):
    """Contrastive training of image and text towers from scratch (CLIPModel's ``return_loss``)."""

    def __init__(self, cfg: TinyClipConfig, tokenizer: CLIPTokenizer):
        super().__init__()
        self.save_hyperparameters(cfg.model_dump(mode="json"))
        self.cfg = cfg
        self.model = build_clip(cfg, tokenizer)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, input_ids = batch
        # no attention mask: the text tower is causal and pools at the first end token, so the
        # padding after it cannot change the embedding (OpenAI's CLIP trains the same way)
        output = self.model(input_ids=input_ids, pixel_values=normalize_pixels(images), return_loss=True)
        self.log_dict({f"{STAGE}/loss": output.loss, f"{STAGE}/logit_scale": self.model.logit_scale.exp()}, prog_bar=True)
        return output.loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Clip the temperature's inverse at 100, as CLIP does, so training stays stable."""
        self.model.logit_scale.data.clamp_(max=math.log(100))

    def configure_optimizers(self):
        params = list(self.model.parameters())
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.98), eps=1e-6)
        scheduler = warmup_cosine(optimizer, warmup=self.cfg.warmup_steps, total=self.cfg.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def retrieval_accuracy(embedder: ClipEmbedder, scenes: list[Scene]) -> dict[str, float]:
    """Top-1 image->text and text->image retrieval among ``scenes`` (chance: about 1/len).

    A retrieval counts as right when the caption retrieved (or the image's caption) equals
    the true one: held-out scenes can repeat a caption with the objects elsewhere."""
    captions = [s.caption() for s in scenes]
    similarity = embedder.image_embeddings([render(s) for s in scenes]) @ embedder.text_embeddings(captions).T
    truth = torch.tensor([[a == b for b in captions] for a in captions])
    rows = torch.arange(len(scenes))
    return {
        "image_to_text": float(truth[rows, similarity.argmax(dim=1)].double().mean()),
        "text_to_image": float(truth[similarity.argmax(dim=0), rows].double().mean()),
    }


def moved(scene: Scene, rng: random.Random, **change: str) -> Scene:
    """The one-object ``scene`` with its object at a random new position (and ``change``d)."""
    obj = scene.objects[0]
    low = SIZES[obj.size] / 2 + 2
    high = scene.resolution - low
    return replace(scene, objects=(replace(obj, cx=rng.uniform(low, high), cy=rng.uniform(low, high), **change),))


def position_invariance(embedder: ClipEmbedder, count: int, seed: int = 0) -> dict[str, float]:
    """What CLIP-I rests on: the image-embedding cosine between two renders of one object at
    different positions, against the same move with another colour or another shape."""
    rng = random.Random(seed)
    originals, same, colour, shape = [], [], [], []
    for scene in held_out_scenes(count, 1):
        obj = scene.objects[0]
        originals.append(scene)
        same.append(moved(scene, rng))
        colour.append(moved(scene, rng, colour=rng.choice([c for c in OBJECT_COLOURS if c not in (obj.colour, scene.background)])))
        shape.append(moved(scene, rng, shape=rng.choice([s for s in SHAPES if s != obj.shape])))
    anchor = embedder.image_embeddings([render(s) for s in originals])

    def cosine(others: list[Scene]) -> torch.Tensor:
        return (anchor * embedder.image_embeddings([render(s) for s in others])).sum(dim=1)

    same_cos, colour_cos, shape_cos = cosine(same), cosine(colour), cosine(shape)
    return {
        "same_object_moved": float(same_cos.mean()),
        "other_colour_moved": float(colour_cos.mean()),
        "other_shape_moved": float(shape_cos.mean()),
        "same_beats_both": float(((same_cos > colour_cos) & (same_cos > shape_cos)).double().mean()),
    }


def retrieval_by_group(embedder: ClipEmbedder, count: int) -> dict[str, dict[str, float]]:
    """``retrieval_accuracy`` among ``count`` held-out scenes of one, two and three objects."""
    return {f"{n}-object": retrieval_accuracy(embedder, held_out_scenes(count, n)) for n in (1, 2, 3)}


class RetrievalCurve(pl.Callback):
    """Every ``every`` steps, append held-out top-1 retrieval per group to ``path`` (JSON lines) and redraw its chart."""

    def __init__(self, path: Path, tokenizer: CLIPTokenizer, every: int, count: int):
        self.path, self.tokenizer, self.every, self.count = path, tokenizer, every, count

    def on_train_batch_end(self, trainer: pl.Trainer, module: ClipModule, outputs, batch, batch_idx: int) -> None:
        if not measurement_due(trainer, self.every):
            return
        report = retrieval_by_group(ClipEmbedder(module.model, self.tokenizer), self.count)
        record = {f"{group} {way}": value for group, ways in report.items() for way, value in ways.items()}
        append_and_plot(self.path, {"step": trainer.global_step, **record}, f"held-out top-1 retrieval among {self.count}", "share")


def run_recipe(cfg: TinyClipConfig) -> Path:
    """Train (or resume) the model, write it as a transformers folder (weights, tokenizer,
    image processor) to ``output_dir/model``, measure it into ``output_dir/report.json``;
    returns the folder. A finished run only writes and measures again."""
    pl.seed_everything(cfg.seed, workers=True)
    tokenizer = build_tokenizer(cfg.text.max_length)
    images, captions = rendered_shapeworld(cfg.output_dir / "data", cfg.data.train_scenes, cfg.data.seed, cfg.data.resolution)
    input_ids = tokenizer(captions, padding="max_length", max_length=cfg.text.max_length, truncation=True, return_tensors="pt").input_ids
    loader = DataLoader(TensorDataset(torch.from_numpy(images), input_ids), batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    module = ClipModule(cfg, tokenizer)
    timer = Timer(verbose=False)
    curve = RetrievalCurve(cfg.output_dir / STAGE / "retrieval_curve.jsonl", tokenizer, cfg.eval_every, cfg.eval_scenes)
    trainer = stage_trainer(cfg, STAGE, cfg.steps, callbacks=[timer, curve])
    trainer.fit(module, loader, ckpt_path=last_checkpoint(cfg, STAGE))

    final = cfg.output_dir / "model"
    module.model.save_pretrained(final, safe_serialization=True)
    tokenizer.save_pretrained(final)
    # the preprocessing ClipEmbedder does, written down so stock transformers (CLIPProcessor) reads the folder too
    CLIPImageProcessor(size={"shortest_edge": cfg.data.resolution}, crop_size=cfg.data.resolution).save_pretrained(final)
    embedder = ClipEmbedder(module.model.eval(), tokenizer)
    report = {
        "steps": trainer.global_step,
        "train_seconds": round(timer.time_elapsed("train")),
        "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in module.model.parameters()),
        "weights_bytes": (final / "model.safetensors").stat().st_size,
        "retrieval_top1": retrieval_by_group(embedder, cfg.eval_scenes),
        "position_invariance": position_invariance(embedder, cfg.eval_scenes),
    }
    (cfg.output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return final
