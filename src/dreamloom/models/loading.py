"""Load a registry entry as a diffusers pipeline, refusing pickle unless allowed.

Single-file checkpoints in the original LDM layout are converted by diffusers'
``from_single_file``; dreamloom points it at an architecture config it ships (found by
reading tensor shapes) so that no hub lookup is needed for architectures it knows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors import safe_open

from dreamloom.models.registry import ModelEntry, embedded_models_dir


class PickleRefused(ValueError):
    """Raised for pickle weights when the user has not allowed them."""


def _refuse_pickle(entry: ModelEntry) -> None:
    raise PickleRefused(
        f"{entry.location} holds pickle weights, which can run arbitrary code when loaded; "
        "convert it to .safetensors, or pass --allow-pickle if you trust its source"
    )


def single_file_architecture(path: Path) -> tuple[type[DiffusionPipeline], str | None]:
    """Pipeline class and a local config folder for an LDM-layout checkpoint.

    Embedded models are recognised by their exact tensor shapes; SD 1.x/2.x/XL by their
    signature tensors (their configs come from the hub when it is reachable).
    """
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
    if any(k.startswith("conditioner.embedders.1") for k in keys):
        return StableDiffusionXLPipeline, None
    for folder in sorted(embedded_models_dir().iterdir()):
        if (folder / "model_index.json").exists() and _matches_folder(shapes, folder):
            return StableDiffusionPipeline, str(folder)
    return StableDiffusionPipeline, None


def _matches_folder(shapes: dict[str, tuple], folder: Path) -> bool:
    from dreamloom.models.export import diffusers_to_ldm_shapes

    try:
        expected = diffusers_to_ldm_shapes(folder)
    except (OSError, KeyError):
        return False
    return expected == {k: v for k, v in shapes.items() if k in expected} and len(expected) == len(shapes)


def load_pipeline(entry: ModelEntry, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False) -> DiffusionPipeline:
    """Load ``entry`` onto ``device``; pickle (.ckpt/.bin/.pt) only with ``allow_pickle``."""
    if entry.format == "pickle" and not allow_pickle:
        _refuse_pickle(entry)
    common = {"torch_dtype": dtype}
    if entry.format == "diffusers":
        has_safetensors = any(entry.path.glob("*/*.safetensors"))
        if not has_safetensors and not allow_pickle:
            _refuse_pickle(entry)
        pipeline = DiffusionPipeline.from_pretrained(
            entry.path, use_safetensors=has_safetensors, local_files_only=True, safety_checker=None, **common
        )
    elif entry.format in ("single-file", "pickle"):
        cls, config = single_file_architecture(entry.path) if entry.format == "single-file" else (StableDiffusionPipeline, None)
        kwargs = {"config": config, "local_files_only": True} if config else {}
        pipeline = cls.from_single_file(str(entry.path), **kwargs, **common)
    else:
        try:
            pipeline = DiffusionPipeline.from_pretrained(entry.location, use_safetensors=not allow_pickle, **common)
        except OSError as error:
            raise ValueError(f"could not load {entry.location!r} from the model hub: {error}") from None
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def model_hash(entry: ModelEntry) -> str:
    """AUTOMATIC1111's short model hash: the first 10 hex digits of the weights' SHA-256
    (of the UNet's weights for a diffusers folder)."""
    if entry.format == "hub":
        return ""
    path = entry.path
    if entry.format == "diffusers":
        candidates = sorted((path / "unet").glob("*.safetensors")) or sorted((path / "unet").glob("*"))
        path = candidates[0]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:10]
