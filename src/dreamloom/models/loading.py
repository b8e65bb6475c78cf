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

from dreamloom.models.export import ldm_shapes
from dreamloom.models.registry import ModelEntry


class PickleRefused(ValueError):
    """Raised for pickle weights when the user has not allowed them."""


def _refuse_pickle(entry: ModelEntry) -> None:
    raise PickleRefused(
        f"{entry.location} holds pickle weights, which can run arbitrary code when loaded; "
        "convert it to .safetensors, or pass --allow-pickle if you trust its source"
    )


def single_file_architecture(path: Path, known_folders: list[Path]) -> tuple[type[DiffusionPipeline], str | None]:
    """Pipeline class and a local config folder for an LDM-layout checkpoint.

    A checkpoint whose every tensor name and shape matches the export of a known diffusers
    folder (the embedded models, the models folder's) takes that folder's configs, offline.
    Otherwise SDXL is told from its second text encoder, and diffusers fetches the configs
    of SD 1.x/2.x/XL from the hub when it is reachable.
    """
    with safe_open(str(path), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    for folder in known_folders:
        try:
            if ldm_shapes(folder) == shapes:
                return StableDiffusionPipeline, str(folder)
        except (OSError, KeyError, ValueError):
            continue
    if any(k.startswith("conditioner.embedders.1") for k in shapes):
        return StableDiffusionXLPipeline, None
    return StableDiffusionPipeline, None


def load_pipeline(
    entry: ModelEntry,
    device: torch.device,
    dtype: torch.dtype,
    allow_pickle: bool = False,
    known_folders: list[Path] = (),
) -> DiffusionPipeline:
    """Load ``entry`` onto ``device``; pickle (.ckpt/.bin/.pt) only with ``allow_pickle``.

    ``known_folders`` are diffusers folders whose configs a single-file checkpoint of the
    same architecture may borrow (see ``single_file_architecture``)."""
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
        if entry.format == "single-file":
            cls, config = single_file_architecture(entry.path, list(known_folders))
        else:
            cls, config = StableDiffusionPipeline, None
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
