"""Training batches: ShapeWorld images with questions drawn fresh for every step.

Images are rendered once (cached like tiny-SD's); the questions are drawn per step from a
generator seeded by the step number, so batch ``n`` is the same in every run and a resumed
run continues with exactly the batches it has not seen. Each example is one chat in the
model's own template, tokenized by its own processor; the loss covers only the answer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset
from transformers import BatchFeature, Llama4Processor

from dreamloom.shapeworld import Scene, sample_scenes
from dreamloom.train.tiny_sd.data import rendered_shapeworld
from dreamloom.vision.tiny_vlm.questions import Question, sample_question

IGNORE = -100  # the label transformers' loss skips


def user_turn(question: str) -> dict:
    """One user message: the image, then the question (as Llama 4 prompts put it)."""
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}


def encode(processor: Llama4Processor, images: Sequence, questions: Sequence[Question]) -> BatchFeature:
    """Model inputs for whole chats (question and answer), right-padded, with ``labels`` that
    keep only each answer and its closing ``<|eot|>``: the chat template ends every chat with
    them, so they are the last tokens before the padding."""
    chats = [[user_turn(q.text), {"role": "assistant", "content": q.answer}] for q in questions]
    texts = [processor.apply_chat_template(chat, tokenize=False) for chat in chats]
    batch = processor(text=texts, images=list(images), padding=True, padding_side="right", return_tensors="pt")
    labels = torch.full_like(batch["input_ids"], IGNORE)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    for row, (question, length) in enumerate(zip(questions, lengths)):
        answer = len(processor.tokenizer(question.answer, add_special_tokens=False).input_ids) + 1
        labels[row, length - answer : length] = batch["input_ids"][row, length - answer : length]
    batch["labels"] = labels
    return batch


def training_scenes(cache: Path, count: int, seed: int, resolution: int) -> tuple[np.ndarray, list[Scene]]:
    """The training images (N,H,W,3 uint8, rendered once into ``cache``) and their ground truth."""
    images, _ = rendered_shapeworld(cache, count, seed, resolution)
    return images, sample_scenes(seed, count, resolution=resolution)


class QuestionBatches(IterableDataset):
    """Endless batches from step ``start`` on: batch ``n`` draws its scenes and questions from
    ``random.Random((seed, n))``, independent of every other batch."""

    def __init__(self, processor: Llama4Processor, images: np.ndarray, scenes: list[Scene], kinds: dict[str, float],
                 batch_size: int, seed: int, start: int = 0):
        self.processor, self.images, self.scenes, self.kinds = processor, images, scenes, kinds
        self.batch_size, self.seed, self.start = batch_size, seed, start

    def batch(self, step: int) -> BatchFeature:
        rng = random.Random(f"{self.seed}-{step}")
        picked = [rng.randrange(len(self.scenes)) for _ in range(self.batch_size)]
        questions = [sample_question(self.scenes[i], self.kinds, rng) for i in picked]
        return encode(self.processor, [self.images[i] for i in picked], questions)

    def __iter__(self) -> Iterator[BatchFeature]:
        step = self.start
        while True:
            yield self.batch(step)
            step += 1
