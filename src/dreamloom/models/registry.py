"""The model registry: the embedded models plus everything found in the models folder,
and the LoRAs in its ``Lora/`` (AUTOMATIC1111's folder name) or ``loras/`` subfolder.

A name from a request resolves only to an entry the registry listed, so no request can
reach a file outside the models folder; explicit paths are for the local command line, and
model-hub ids resolve only where the operator allowed them (``allow_hub``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from dreamloom.config import Settings

Format = Literal["diffusers", "single-file", "pickle", "hub", "lora"]

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
LORA_FOLDERS = ("Lora", "loras")
#: The file of a diffusers-format LoRA folder (what ``save_lora_weights`` writes).
DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    location: str
    format: Format
    embedded: bool = False

    @property
    def path(self) -> Path:
        return Path(self.location)

    @property
    def pickle(self) -> bool:
        """Its weights are pickle (a .ckpt/.bin/.pt/.pth file), which can run code when loaded."""
        return self.format == "pickle" or self.path.suffix in PICKLE_SUFFIXES

    def text_encoder_layers(self) -> int | None:
        """How many layers a diffusers folder's (first) text encoder has, read from its config: the
        deepest clip skip it allows. None when the config does not say."""
        try:
            return int(json.loads((self.path / "text_encoder" / "config.json").read_text())["num_hidden_layers"])
        except (OSError, KeyError, TypeError, ValueError):
            return None

    def native_size(self) -> int | None:
        """A diffusers folder's trained resolution, read from its configs without loading weights
        (UNet sample size times the VAE's downscale); None when the configs do not say."""
        try:
            unet = json.loads((self.path / "unet" / "config.json").read_text())
            vae = json.loads((self.path / "vae" / "config.json").read_text())
            return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
        except (OSError, KeyError, TypeError, ValueError):
            return None


def embedded_models_dir() -> Path:
    return Path(str(resources.files("dreamloom") / "assets"))


def _entry_for_path(path: Path, name: str, embedded: bool = False) -> ModelEntry | None:
    if path.is_dir() and (path / "model_index.json").exists():
        return ModelEntry(name, str(path), "diffusers", embedded)
    if path.is_file() and path.suffix in SAFE_SUFFIXES:
        return ModelEntry(name, str(path), "single-file", embedded)
    if path.is_file() and path.suffix in PICKLE_SUFFIXES:
        return ModelEntry(name, str(path), "pickle", embedded)
    return None


def _lora_entry_for_path(path: Path, name: str) -> ModelEntry | None:
    """A LoRA: one weights file (kohya or diffusers keys, diffusers tells them apart),
    or a folder holding ``pytorch_lora_weights.safetensors``."""
    if (path.is_dir() and (path / DIFFUSERS_LORA_FILE).is_file()) or (
        path.is_file() and path.suffix in SAFE_SUFFIXES + PICKLE_SUFFIXES
    ):
        return ModelEntry(name, str(path), "lora")
    return None


def _find(name: str, entries: list[ModelEntry]) -> ModelEntry | None:
    """The entry called ``name``, by its file or folder name with or without suffix."""
    for entry in entries:
        stem = entry.name.rsplit(".", 1)[0] if entry.path.is_file() else entry.name
        if name in (entry.name, stem):
            return entry
    return None


class ModelRegistry:
    def __init__(self, models_dir: Path | None, allow_hub: bool = False):
        self.models_dir = Path(models_dir).resolve() if models_dir else None
        self.allow_hub = allow_hub

    @classmethod
    def of(cls, settings: Settings) -> ModelRegistry:
        """The registry of ``settings``' models folder, with the operator's hub rule."""
        return cls(settings.models_dir, allow_hub=settings.allow_hub)

    def entries(self) -> list[ModelEntry]:
        """Embedded models first, then the models folder (top level and one level down)."""
        found = [e for p in sorted(embedded_models_dir().iterdir()) if (e := _entry_for_path(p, p.name, embedded=True))]
        if self.models_dir and self.models_dir.is_dir():
            for path in sorted([*self.models_dir.iterdir(), *self.models_dir.glob("*/*")]):
                name = path.relative_to(self.models_dir).as_posix()
                if path.parent != self.models_dir and (path.parent / "model_index.json").exists():
                    continue
                if name.split("/")[0] in LORA_FOLDERS:
                    continue
                entry = _entry_for_path(path, name)
                if entry:
                    found.append(entry)
        return found

    def resolve(self, name: str, allow_paths: bool = False) -> ModelEntry:
        """The entry called ``name`` (folder or file name, with or without suffix), a hub id
        where the registry allows them, or, with ``allow_paths``, a filesystem path. Anything
        else is a ValueError naming the available models."""
        entries = self.entries()
        if entry := _find(name, entries):
            return entry
        if allow_paths and Path(name).exists():
            path = Path(name).resolve()
            entry = _entry_for_path(path, path.name)
            if entry is None:
                raise ValueError(f"{name} is neither a diffusers folder nor a weights file")
            return entry
        hub_id = _HUB_ID.match(name) and ".." not in name and not Path(name).exists()
        if hub_id and self.allow_hub:
            return ModelEntry(name, name, "hub")
        available = ", ".join(e.name for e in entries) or "none"
        hint = " (model-hub ids need the operator's --allow-hub)" if hub_id else ""
        raise ValueError(f"model {name!r} not found{hint}; available: {available}")

    def shown(self, entry: ModelEntry) -> str:
        """Where ``entry`` lives as a client may see it: its path inside the models folder (or its
        name, for an embedded model); the server's own paths are not the client's business."""
        if self.models_dir and entry.path.is_relative_to(self.models_dir):
            return entry.path.relative_to(self.models_dir).as_posix()
        return entry.name

    def loras(self) -> list[ModelEntry]:
        """The LoRAs in the models folder's ``Lora/`` and ``loras/``, named by file or folder name."""
        folders = [self.models_dir / f for f in LORA_FOLDERS if self.models_dir and (self.models_dir / f).is_dir()]
        return [e for folder in folders for p in sorted(folder.iterdir()) if (e := _lora_entry_for_path(p, p.name))]

    def resolve_lora(self, name: str, allow_paths: bool = False) -> ModelEntry:
        """The LoRA called ``name`` (file name with or without suffix, or folder name), or, with
        ``allow_paths``, a filesystem path. Anything else is a ValueError naming the available ones."""
        entries = self.loras()
        if entry := _find(name, entries):
            return entry
        if allow_paths and Path(name).exists():
            path = Path(name).resolve()
            entry = _lora_entry_for_path(path, path.name)
            if entry is None:
                raise ValueError(f"{name} is neither a LoRA weights file nor a folder holding {DIFFUSERS_LORA_FILE}")
            return entry
        available = ", ".join(e.name for e in entries) or "none"
        where = " or ".join(f"{folder}/" for folder in LORA_FOLDERS)
        raise ValueError(f"LoRA {name!r} not found in the models folder's {where}; available: {available}")
