"""What a runtime backend is: something that loads a registry entry and applies a load plan.

The engine and the model manager see only this protocol and a ``LoadPlan``; the diffusers/PyTorch
backend (``diffusers_backend``) is the first implementation, and compiled or OpenVINO backends
plug in behind the same two calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from diffusers import DiffusionPipeline

from dreamloom.models.registry import ModelEntry
from dreamloom.runtime.plan import LoadPlan


@dataclass(frozen=True)
class WeightSource:
    """Where weights may come from and what is allowed: pickle only when the operator allows it;
    ``known_folders`` are diffusers folders a single-file checkpoint may borrow configs from;
    ``tokenizers_dir`` holds CLIP tokenizers for real checkpoints (nothing reaches a model hub)."""

    allow_pickle: bool = False
    known_folders: list[Path] = field(default_factory=list)
    tokenizers_dir: Path | None = None


@runtime_checkable
class Backend(Protocol):
    """Loads weights and places them as a plan says."""

    name: str

    def load(self, entry: ModelEntry, plan: LoadPlan, source: WeightSource) -> DiffusionPipeline:
        """The pipeline of ``entry``, every component placed as ``plan`` says."""
        ...

    def apply(self, pipeline: DiffusionPipeline, plan: LoadPlan) -> DiffusionPipeline:
        """Place ``pipeline``'s components as ``plan`` says (a pipeline loaded or built elsewhere)."""
        ...
