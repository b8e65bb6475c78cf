"""Stage 1 of the recipe: the vision encoder learns what lies where before it meets the
language model, as Llama 4's encoder was pretrained before early fusion.

Trained through answers alone, the encoder learned colours quickly but shapes and places
hardly at all (41 % shape, 19 % "where" after 2000 steps). Here every image token is read
out directly by a linear head (``CellHead``): the shape and colour covering its cell of
the image, and the cell's row and column. That needs no text, so a step is a batch of
images only (cheap), and the same head keeps reading the tokens in stage 2.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from transformers import BaseImageProcessor, Llama4ForConditionalGeneration

from dreamloom.shapeworld import Scene
from dreamloom.train.schedules import warmup_cosine
from dreamloom.vision.tiny_vlm.config import TinyVlmConfig
from dreamloom.vision.tiny_vlm.data import CELL_COLOURS, CELL_SHAPES, cell_targets

STAGE = "vision"


class CellHead(nn.Module):
    """A linear read-out of each image token: the shape and the colour covering its cell, and
    the cell's row and column (so each token also says where it is: the language model's
    RoPE offsets to image tokens shift with the question's length)."""

    def __init__(self, hidden_size: int, grid: int):
        super().__init__()
        self.grid = grid
        self.linear = nn.Linear(hidden_size, len(CELL_SHAPES) + len(CELL_COLOURS) + 2 * grid)

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits of shape, colour, row and column for (images x cells, hidden) ``tokens``."""
        return self.linear(tokens).split([len(CELL_SHAPES), len(CELL_COLOURS), self.grid, self.grid], dim=-1)

    def loss(self, tokens: torch.Tensor, shapes: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        shape, colour, row, column = self.split(tokens)
        cells = torch.arange(self.grid**2, device=tokens.device).repeat(len(tokens) // self.grid**2)
        return (F.cross_entropy(shape, shapes.flatten()) + F.cross_entropy(colour, colours.flatten())
                + F.cross_entropy(row, cells // self.grid) + F.cross_entropy(column, cells % self.grid))


def image_tokens(model: Llama4ForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    """The embeddings that replace the ``<|patch|>`` tokens: (images x tokens, hidden)."""
    features = model.get_image_features(pixel_values=pixel_values).last_hidden_state
    return model.multi_modal_projector(features.flatten(0, 1))


@torch.no_grad()
def cell_shape_accuracy(model: Llama4ForConditionalGeneration, head: CellHead, image_processor: BaseImageProcessor,
                        scenes: list[Scene], images: list) -> float:
    """The share of held-out cells covered by an object whose shape the head reads right."""
    tokens = image_tokens(model, image_processor(images, return_tensors="pt")["pixel_values"])
    predicted = head.split(tokens)[0].argmax(dim=-1)
    truth = torch.tensor([cell_targets(s, head.grid)[0] for s in scenes]).flatten()
    covered = truth != CELL_SHAPES.index("none")
    return float((predicted[covered] == truth[covered]).float().mean())


class CellBatches(IterableDataset):
    """Endless batches of (pixel values, cell shapes, cell colours) from step ``start`` on;
    batch ``n`` draws its images with ``random.Random(f"{seed}-vision-{n}")``."""

    def __init__(self, image_processor: BaseImageProcessor, images: np.ndarray, scenes: list[Scene], batch_size: int,
                 grid: int, seed: int, start: int = 0):
        self.image_processor, self.images, self.scenes = image_processor, images, scenes
        self.batch_size, self.grid, self.seed, self.start = batch_size, grid, seed, start

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        step = self.start
        while True:
            rng = random.Random(f"{self.seed}-vision-{step}")
            picked = [rng.randrange(len(self.scenes)) for _ in range(self.batch_size)]
            pixels = self.image_processor([self.images[i] for i in picked], return_tensors="pt")["pixel_values"]
            shapes, colours = zip(*(cell_targets(self.scenes[i], self.grid) for i in picked))
            yield pixels, torch.tensor(shapes), torch.tensor(colours)
            step += 1


class VisionModule(pl.LightningModule):
    """Trains the vision encoder, the projector and the head; the language model waits."""

    def __init__(self, cfg: TinyVlmConfig, model: Llama4ForConditionalGeneration, head: CellHead,
                 image_processor: BaseImageProcessor, images: np.ndarray, scenes: list[Scene]):
        super().__init__()
        self.cfg, self.model, self.head = cfg, model, head
        self.image_processor, self.images, self.scenes = image_processor, images, scenes

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        pixels, shapes, colours = batch
        loss = self.head.loss(image_tokens(self.model, pixels), shapes, colours)
        self.log(f"{STAGE}/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        stage = self.cfg.vision_stage
        params = [*self.model.vision_model.parameters(), *self.model.multi_modal_projector.parameters(),
                  *self.head.parameters()]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=stage.lr, betas=(0.9, 0.98))
        scheduler = warmup_cosine(optimizer, warmup=stage.warmup_steps, total=stage.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        batches = CellBatches(self.image_processor, self.images, self.scenes, self.cfg.vision_stage.batch_size,
                              self.head.grid, self.cfg.seed, start=self.trainer.global_step)
        return DataLoader(batches, batch_size=None)
