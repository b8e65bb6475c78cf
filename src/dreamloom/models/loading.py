"""Load a registry entry as a diffusers pipeline, refusing pickle unless allowed; the runtime's
backend (``runtime.diffusers_backend``) calls this and then places it as its load plan says.

Single-file checkpoints in the original LDM layout load offline through ``single_file``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging

from dreamloom.models.registry import ModelEntry
from dreamloom.models.single_file import load_single_file


class PickleRefused(ValueError):
    """Raised for pickle weights when the user has not allowed them."""


def _refuse_pickle(entry: ModelEntry) -> None:
    raise PickleRefused(
        f"{entry.location} holds pickle weights, which can run arbitrary code when loaded; "
        "convert it to .safetensors, or pass --allow-pickle if you trust its source"
    )


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence diffusers' and transformers' per-component loading bars for one load: a
    front end shows its own progress, and a server log should not fill with bars."""
    was = diffusers_logging.is_progress_bar_enabled(), transformers.utils.logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            diffusers_logging.enable_progress_bar()
        if was[1]:
            transformers.utils.logging.enable_progress_bar()


def load_pipeline(
    entry: ModelEntry,
    dtype: torch.dtype,
    allow_pickle: bool = False,
    known_folders: list[Path] = (),
    tokenizers_dir: Path | None = None,
) -> DiffusionPipeline:
    """Load ``entry`` at ``dtype``, where the loader puts it (the CPU); pickle (.ckpt/.bin/.pt)
    only with ``allow_pickle``. Placing the components is the runtime's (``runtime.LoadPlan``).

    ``known_folders`` are diffusers folders whose configs a single-file checkpoint with the
    same tensors may borrow; ``tokenizers_dir`` holds CLIP tokenizers for real checkpoints
    (see ``single_file.load_single_file``)."""
    if entry.format == "pickle" and not allow_pickle:
        _refuse_pickle(entry)
    with quiet_loading():
        pipeline = _load(entry, dtype, allow_pickle, list(known_folders), tokenizers_dir)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _load(
    entry: ModelEntry, dtype: torch.dtype, allow_pickle: bool, known_folders: list[Path], tokenizers_dir: Path | None
) -> DiffusionPipeline:
    common = {"dtype": dtype}
    if entry.format == "diffusers":
        has_safetensors = any(entry.path.glob("*/*.safetensors"))
        if not has_safetensors and not allow_pickle:
            _refuse_pickle(entry)
        return DiffusionPipeline.from_pretrained(
            entry.path, use_safetensors=has_safetensors, local_files_only=True, safety_checker=None, **common
        )
    if entry.format in ("single-file", "pickle"):
        return load_single_file(entry.path, dtype, known_folders, tokenizers_dir)
    try:  # the Hugging Face cache first: an unreachable hub costs minutes of retries
        return DiffusionPipeline.from_pretrained(entry.location, use_safetensors=not allow_pickle, local_files_only=True, **common)
    except OSError:
        pass
    try:
        return DiffusionPipeline.from_pretrained(entry.location, use_safetensors=not allow_pickle, **common)
    except OSError as error:
        raise ValueError(f"could not load {entry.location!r} from the model hub: {error}") from None


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
