"""ShapeWorld rendered once into arrays (cached on disk) and served as tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from dreamloom.shapeworld import render_array, sample_scenes


def rendered_shapeworld(cache: Path, count: int, seed: int, resolution: int) -> tuple[np.ndarray, list[str]]:
    """``count`` images (N,H,W,3 uint8) and captions, rendered once and kept in ``cache``."""
    path = cache / f"shapeworld-{seed}-{count}-{resolution}.npz"
    if path.exists():
        stored = np.load(path)
        return stored["images"], stored["captions"].tolist()
    scenes = sample_scenes(seed, count, resolution=resolution)
    images = np.stack([render_array(s) for s in tqdm(scenes, desc="rendering ShapeWorld", unit="img")])
    captions = [s.caption() for s in scenes]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, captions=np.array(captions))
    return images, captions


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1], the range diffusers' VAEs expect."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class ImageDataset(Dataset):
    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_model_range(self.images[index : index + 1])[0]


class LatentCaptionDataset(Dataset):
    """Pre-encoded latents with their token ids: the UNet stage never runs the VAE encoder."""

    def __init__(self, latents: torch.Tensor, input_ids: torch.Tensor):
        self.latents, self.input_ids = latents, input_ids

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latents[index], self.input_ids[index]
