"""Vision-language models by name, found as generation models are: the embedded ones
(dreamloom-tiny-vlm), then the models folder (top level and one level down).

A vision model is a transformers folder whose ``config.json`` names an image-text-to-text
architecture (Llama 4, LLaVA, Qwen-VL, ...); CLIP and the diffusers folders are not. As for
generation models, a request's name resolves only to a listed entry; paths and hub ids
(``meta-llama/Llama-4-Scout-17B-16E-Instruct``, passed on to transformers) are for the
local command line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from dreamloom.models.registry import embedded_models_dir

DEFAULT_VISION_MODEL = "dreamloom-tiny-vlm"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class VisionModelEntry:
    name: str
    location: str
    embedded: bool = False

    @property
    def path(self) -> Path:
        return Path(self.location)


def is_vision_model(folder: Path) -> bool:
    """Whether ``folder`` holds a transformers image-text-to-text model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES  # slow: on demand

    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (ValueError, OSError):
        return False
    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def vision_models(models_dir: Path | None) -> list[VisionModelEntry]:
    """Embedded vision models first, then those of ``models_dir``."""
    found = [VisionModelEntry(p.name, str(p), embedded=True)
             for p in sorted(embedded_models_dir().iterdir()) if is_vision_model(p)]
    if models_dir and Path(models_dir).is_dir():
        root = Path(models_dir).resolve()
        for path in sorted([*root.iterdir(), *root.glob("*/*")]):
            if path.is_dir() and is_vision_model(path):
                found.append(VisionModelEntry(path.relative_to(root).as_posix(), str(path)))
    return found


def resolve_vision_model(name: str, models_dir: Path | None, allow_paths: bool = False) -> VisionModelEntry:
    """The vision model called ``name``, or (with ``allow_paths``) a folder path or hub id.
    A ValueError names the available models otherwise."""
    entries = vision_models(models_dir)
    for entry in entries:
        if entry.name == name:
            return entry
    if allow_paths and Path(name).exists():
        path = Path(name).resolve()
        if not is_vision_model(path):
            raise ValueError(f"{name} is not a transformers image-text-to-text model folder (no config.json naming "
                             "one such architecture)")
        return VisionModelEntry(path.name, str(path))
    if allow_paths and _HUB_ID.match(name) and ".." not in name:
        return VisionModelEntry(name, name)
    available = ", ".join(e.name for e in entries) or "none installed"
    raise ValueError(f"vision model {name!r} not found; available: {available}")
