"""DreamBooth examples and the batches built from them.

Every batch is a pure function of (seed, process rank, batch index): which images, their
crops and flips, the noise and the timesteps. A resumed run therefore continues with
exactly the batches an uninterrupted run would have seen, without saving any random
state; and each DDP process sees its own stream of examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import IterableDataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Example:
    """One training image and the prompt it is paired with."""

    path: Path
    caption: str


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if Path(folder).is_dir() else []


def find_examples(folder: Path, default_caption: str) -> list[Example]:
    """Every image in ``folder``, captioned by ``image.txt`` beside it (kohya's convention)
    or else ``default_caption``. Missing or empty folders and unreadable images are refused
    here, before any training starts."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such image folder: {folder}")
    files = image_files(folder)
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    examples = []
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"cannot read image {path}: {error}") from None
        caption_file = path.with_suffix(".txt")
        caption = caption_file.read_text().strip() if caption_file.exists() else ""
        examples.append(Example(path, caption or default_caption))
    return examples


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def augment(image: Image.Image, resolution: int, center_crop: bool, flip: bool, rng: np.random.Generator) -> torch.Tensor:
    """Resize the short side to ``resolution``, crop a square (centre or random), flip at
    random if asked; returns CHW in [-1, 1] as the VAE expects."""
    scale = resolution / min(image.size)
    w, h = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    if center_crop:
        left, top = (w - resolution) // 2, (h - resolution) // 2
    else:
        left, top = int(rng.integers(0, w - resolution + 1)), int(rng.integers(0, h - resolution + 1))
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def epoch_order(n: int, seed: int, rank: int, epoch: int) -> np.ndarray:
    """The order of ``n`` examples in one epoch: every example once, shuffled per epoch."""
    return np.random.default_rng([seed, rank, epoch]).permutation(n)


def pick(n: int, seed: int, rank: int, position: int) -> int:
    """The example at ``position`` of the endless shuffled stream."""
    return int(epoch_order(n, seed, rank, position // n)[position % n])


@dataclass
class BatchRecipe:
    """What every batch needs besides the examples; filled in from the config and the model."""

    batch_size: int
    resolution: int
    center_crop: bool
    random_flip: bool
    latent_shape: tuple[int, int, int]
    num_train_timesteps: int
    offset_noise: float
    seed: int


class DreamBoothBatches(IterableDataset):
    """An endless stream of batches from ``start`` on: instance examples first, then as
    many class examples (prior preservation), with their noise and timesteps."""

    def __init__(self, instances: list[Example], classes: list[Example], tokenize, recipe: BatchRecipe,
                 rank: int = 0, start: int = 0):
        self.instances, self.classes, self.tokenize, self.recipe = instances, classes, tokenize, recipe
        self.rank, self.start = rank, start
        self._images: dict[Path, Image.Image] = {}

    def _image(self, path: Path) -> Image.Image:
        if path not in self._images:
            self._images[path] = load_rgb(path)
        return self._images[path]

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        r = self.recipe
        chosen = [self.instances[pick(len(self.instances), r.seed, self.rank, index * r.batch_size + j)]
                  for j in range(r.batch_size)]
        if self.classes:
            chosen += [self.classes[pick(len(self.classes), r.seed + 1, self.rank, index * r.batch_size + j)]
                       for j in range(r.batch_size)]
        rng = np.random.default_rng([r.seed, self.rank, index, 1])
        pixels = torch.stack([augment(self._image(e.path), r.resolution, r.center_crop, r.random_flip, rng) for e in chosen])
        generator = torch.Generator().manual_seed(int(np.random.default_rng([r.seed, self.rank, index, 2]).integers(2**62)))
        noise = torch.randn((len(chosen), *r.latent_shape), generator=generator)
        if r.offset_noise:
            noise += r.offset_noise * torch.randn((len(chosen), r.latent_shape[0], 1, 1), generator=generator)
        timesteps = torch.randint(0, r.num_train_timesteps, (len(chosen),), generator=generator)
        return {
            "pixels": pixels,
            "input_ids": self.tokenize([e.caption for e in chosen]),
            "noise": noise,
            "timesteps": timesteps,
            "instance_count": torch.tensor(r.batch_size),
            "index": torch.tensor(index),
        }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        index = self.start
        while True:
            yield self.batch(index)
            index += 1
