"""Training batches: ShapeWorld images with questions drawn fresh for every step.

Images are rendered once (cached like tiny-SD's); the questions are drawn per step from a
generator seeded by the step number, so batch ``n`` is the same in every run and a resumed
run continues with exactly the batches it has not seen. Each example is one chat in the
model's own template, tokenized by its own processor: one image, then several questions
in turn, each answered; the loss covers only the answers. Several turns per image give
the vision encoder several answers' gradient per forward pass; the first turn is exactly
the single-question chat every caller sends (attention is causal), so training and use
match. Callers send that turn's image before or after its question (OpenAI clients put
the text first) and word questions their own way: ``text_first`` and ``reworded`` are the
shares of chats trained that way.

Each batch also carries what lies under each image token's cell of the image (the shape
and colour covering it), read from the ground truth: the recipe's auxiliary loss.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset
from transformers import BatchFeature, Llama4Processor, PreTrainedTokenizerBase

from dreamloom.shapeworld import Scene, sample_scenes
from dreamloom.shapeworld.vocab import BACKGROUND_COLOURS, REFERENCE_RESOLUTION, SHAPES, SIZES
from dreamloom.train.tiny_sd.data import rendered_shapeworld
from dreamloom.vision.tiny_vlm.questions import Question, reword, sample_question
from dreamloom.vision.tiny_vlm.tokenizer import EOT

IGNORE = -100  # the label transformers' loss skips
CELL_SHAPES: tuple[str, ...] = ("none", *SHAPES)
CELL_COLOURS: tuple[str, ...] = tuple(BACKGROUND_COLOURS)


def user_turn(question: str, image: bool = True, text_first: bool = False) -> dict:
    """One user message: the image (first turn only) and the question, the image first as
    Llama 4 prompts put it unless ``text_first``."""
    parts = [*([{"type": "image"}] if image else []), {"type": "text", "text": question}]
    return {"role": "user", "content": parts[::-1] if text_first else parts}


def encode(processor: Llama4Processor, images: Sequence, chats: Sequence[Sequence[Question]],
           text_first: Sequence[bool] | None = None) -> BatchFeature:
    """Model inputs for whole chats (one image with the first question, in the order
    ``text_first`` says per chat, then each further question and its answer), right-padded,
    with ``labels`` that keep only the assistant turns: each answer and its closing ``<|eot|>``."""
    texts = []
    for questions, first in zip(chats, text_first or [False] * len(chats)):
        turns = [user_turn(questions[0].text, True, first), {"role": "assistant", "content": questions[0].answer}]
        for question in questions[1:]:
            turns += [user_turn(question.text, image=False), {"role": "assistant", "content": question.answer}]
        texts.append(processor.apply_chat_template(turns, tokenize=False))
    batch = processor(text=texts, images=list(images), padding=True, padding_side="right", return_tensors="pt")
    batch["labels"] = torch.where(assistant_mask(batch["input_ids"], processor.tokenizer), batch["input_ids"], IGNORE)
    return batch


def assistant_mask(input_ids: torch.Tensor, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """True on every token an assistant wrote: from after ``<|header_start|>assistant<|header_end|>``
    up to and including the ``<|eot|>`` that closes the turn."""
    start, role, end = tokenizer.convert_tokens_to_ids(["<|header_start|>", "assistant", "<|header_end|>"])
    eot = tokenizer.convert_tokens_to_ids(EOT)
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, ids in enumerate(input_ids.tolist()):
        inside = False
        for i, token in enumerate(ids):
            if inside:
                mask[row, i] = True
                inside = token != eot
            elif i >= 2 and (ids[i - 2], ids[i - 1], token) == (start, role, end):
                inside = True
    return mask


def training_scenes(cache: Path, count: int, seed: int, resolution: int) -> tuple[np.ndarray, list[Scene]]:
    """The training images (N,H,W,3 uint8, rendered once into ``cache``) and their ground truth."""
    images, _ = rendered_shapeworld(cache, count, seed, resolution)
    return images, sample_scenes(seed, count, resolution=resolution)


def cell_targets(scene: Scene, grid: int) -> tuple[list[int], list[int]]:
    """For each of ``grid`` x ``grid`` cells (row-major, as pixel shuffle orders image tokens):
    the index in ``CELL_SHAPES`` and ``CELL_COLOURS`` of the object whose bounding box covers
    most of the cell, or "none" and the background colour where none covers a fifth of it."""
    side = scene.resolution / grid
    scale = scene.resolution / REFERENCE_RESOLUTION
    shapes, colours = [], []
    for row in range(grid):
        for column in range(grid):
            best, best_cover = None, 0.2 * side * side
            for obj in scene.objects:
                half = SIZES[obj.size] * scale / 2
                width = min(obj.cx + half, (column + 1) * side) - max(obj.cx - half, column * side)
                height = min(obj.cy + half, (row + 1) * side) - max(obj.cy - half, row * side)
                if width > 0 and height > 0 and width * height > best_cover:
                    best, best_cover = obj, width * height
            shapes.append(CELL_SHAPES.index(best.shape if best else "none"))
            colours.append(CELL_COLOURS.index(best.colour if best else scene.background))
    return shapes, colours


class QuestionBatches(IterableDataset):
    """Endless batches from step ``start`` on: batch ``n`` draws its scenes and questions from
    ``random.Random(f"{seed}-{n}")``, independent of every other batch; each chat asks
    ``turns`` different questions about its image. ``grid``: image tokens per side.
    ``text_first``, ``reworded``: shares of chats whose first question comes before the
    image, and of questions worded as users word them (``questions.reword``)."""

    def __init__(self, processor: Llama4Processor, images: np.ndarray, scenes: list[Scene], kinds: dict[str, float],
                 batch_size: int, turns: int, grid: int, seed: int, start: int = 0, text_first: float = 0.0,
                 reworded: float = 0.0):
        self.processor, self.images, self.scenes, self.kinds = processor, images, scenes, kinds
        self.batch_size, self.turns, self.grid, self.seed, self.start = batch_size, turns, grid, seed, start
        self.text_first, self.reworded = text_first, reworded

    def chat(self, scene: Scene, rng: random.Random) -> list[Question]:
        """``turns`` questions about ``scene`` with different texts (fewer if it has fewer)."""
        questions: dict[str, Question] = {}
        for _ in range(4 * self.turns):  # a scene may have fewer distinct questions than turns
            question = sample_question(scene, self.kinds, rng)
            if self.reworded and rng.random() < self.reworded:  # no draw at 0: the base recipe's batches stay
                question = reword(question, scene, rng)
            questions.setdefault(question.text, question)
            if len(questions) == self.turns:
                break
        return list(questions.values())

    def batch(self, step: int) -> BatchFeature:
        rng = random.Random(f"{self.seed}-{step}")
        picked = [rng.randrange(len(self.scenes)) for _ in range(self.batch_size)]
        chats = [self.chat(self.scenes[i], rng) for i in picked]
        text_first = [bool(self.text_first) and rng.random() < self.text_first for _ in picked]
        batch = encode(self.processor, [self.images[i] for i in picked], chats, text_first)
        shapes, colours = zip(*(cell_targets(self.scenes[i], self.grid) for i in picked))
        batch["cell_shapes"], batch["cell_colours"] = torch.tensor(shapes), torch.tensor(colours)
        return batch

    def __iter__(self) -> Iterator[BatchFeature]:
        step = self.start
        while True:
            yield self.batch(step)
            step += 1
