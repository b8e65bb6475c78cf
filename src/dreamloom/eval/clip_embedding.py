"""CLIP embeddings of images and texts, and CLIP-I, DreamBooth's subject-fidelity metric.

CLIP-I (Ruiz et al. 2022, "DreamBooth", Sec. 4.1) is the mean cosine similarity between
the CLIP image embeddings of generated and real subject images. ``load_clip()`` gives the
embedded ``dreamloom-tiny-clip`` (trained on ShapeWorld by ``dreamloom train tiny-clip``);
a folder or hub id of any ``CLIPModel`` (e.g. ``openai/clip-vit-large-patch14``) works the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel, CLIPTokenizer
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from dreamloom.models.loading import quiet_loading
from dreamloom.models.registry import embedded_models_dir

EMBEDDED_CLIP = "dreamloom-tiny-clip"


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW scaled to [0, 1] and standardized with CLIP's mean and std.

    Every OpenAI and LAION CLIP uses these statistics; the tiny model was trained with them
    too, so one preprocessing serves all."""
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std


def pixel_values(images: list[Image.Image], size: int) -> torch.Tensor:
    """CLIP's preprocessing without torchvision: shorter side resized to ``size`` (bicubic),
    centre crop to ``size`` x ``size``, then ``normalize_pixels``."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        scale = size / min(image.size)
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        if (width, height) != image.size:
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        left, top = (width - size) // 2, (height - size) // 2
        arrays.append(np.asarray(image.crop((left, top, left + size, top + size))))
    return normalize_pixels(torch.from_numpy(np.stack(arrays)))


class ClipEmbedder:
    """A ``CLIPModel`` and its tokenizer: images and texts into one L2-normalized space.

    Args:
        model: any transformers ``CLIPModel``; its vision config gives the input size.
        tokenizer: the tokenizer its text tower was trained with.
        batch_size: images or texts per forward pass.
    """

    def __init__(self, model: CLIPModel, tokenizer: CLIPTokenizer, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        """(len(images), projection_dim) unit vectors, on the CPU."""
        parameter = next(self.model.parameters())
        chunks = []
        for start in range(0, len(images), self.batch_size):
            pixels = pixel_values(images[start : start + self.batch_size], self.image_size)
            pooled = self.model.vision_model(pixel_values=pixels.to(parameter.device, parameter.dtype)).pooler_output
            chunks.append(self.model.visual_projection(pooled).float().cpu())
        return F.normalize(torch.cat(chunks), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), projection_dim) unit vectors, on the CPU; texts longer than the text
        tower's positions are truncated."""
        device = next(self.model.parameters()).device
        max_length = self.model.config.text_config.max_position_embeddings
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(
                texts[start : start + self.batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(device)
            pooled = self.model.text_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).pooler_output
            chunks.append(self.model.text_projection(pooled).float().cpu())
        return F.normalize(torch.cat(chunks), dim=-1)


def load_clip(name_or_path: str = EMBEDDED_CLIP, device: str = "cpu") -> ClipEmbedder:
    """The embedded ``dreamloom-tiny-clip``, or a ``CLIPModel`` from a local folder or hub id.

    Only ``.safetensors`` weights are loaded; a folder holding only pickle weights is an error."""
    location: str | Path = embedded_models_dir() / EMBEDDED_CLIP if name_or_path == EMBEDDED_CLIP else name_or_path
    with quiet_loading():
        model = CLIPModel.from_pretrained(location, use_safetensors=True).to(device).eval()
    return ClipEmbedder(model, CLIPTokenizer.from_pretrained(location))


def clip_i(generated: torch.Tensor, references: torch.Tensor) -> float:
    """CLIP-I: the mean cosine over every (generated, reference) pair of image embeddings.

    Takes embeddings (e.g. ``ClipEmbedder.image_embeddings``), so a subject's references
    are embedded once for all the checkpoints compared; any other image embedding (DINO,
    the paper's second metric) fits the same formula."""
    if generated.ndim != 2 or references.ndim != 2 or not len(generated) or not len(references):
        raise ValueError("clip_i takes two non-empty (N, D) embedding matrices")
    return float((F.normalize(generated, dim=-1) @ F.normalize(references, dim=-1).T).mean())
