"""The model registry: the embedded models plus everything found in the models folder.

A name from a request resolves only to an entry the registry listed, so no request can
reach a file outside the models folder; explicit paths are for the local command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

Format = Literal["diffusers", "single-file", "pickle", "hub"]

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
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


class ModelRegistry:
    def __init__(self, models_dir: Path | None):
        self.models_dir = Path(models_dir).resolve() if models_dir else None

    def entries(self) -> list[ModelEntry]:
        """Embedded models first, then the models folder (top level and one level down)."""
        found = [e for p in sorted(embedded_models_dir().iterdir()) if (e := _entry_for_path(p, p.name, embedded=True))]
        if self.models_dir and self.models_dir.is_dir():
            for path in sorted([*self.models_dir.iterdir(), *self.models_dir.glob("*/*")]):
                name = path.relative_to(self.models_dir).as_posix()
                if path.parent != self.models_dir and (path.parent / "model_index.json").exists():
                    continue
                entry = _entry_for_path(path, name)
                if entry:
                    found.append(entry)
        return found

    def resolve(self, name: str, allow_paths: bool = False) -> ModelEntry:
        """The entry called ``name`` (folder or file name, with or without suffix), a hub id,
        or, with ``allow_paths``, a filesystem path. Anything else is a ValueError."""
        entries = self.entries()
        for entry in entries:
            stem = entry.name.rsplit(".", 1)[0] if entry.format != "diffusers" else entry.name
            if name in (entry.name, stem):
                return entry
        if allow_paths and Path(name).exists():
            path = Path(name).resolve()
            entry = _entry_for_path(path, path.name)
            if entry is None:
                raise ValueError(f"{name} is neither a diffusers folder nor a weights file")
            return entry
        if _HUB_ID.match(name) and ".." not in name and not Path(name).exists():
            return ModelEntry(name, name, "hub")
        available = ", ".join(e.name for e in entries) or "none"
        raise ValueError(f"model {name!r} not found; available: {available}")
