"""Keeps loaded pipelines, so repeated requests for a model do not reload it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from diffusers import DiffusionPipeline

from dreamloom.config import Settings
from dreamloom.models.device import pick_device, pick_dtype
from dreamloom.models.loading import load_pipeline, model_hash
from dreamloom.models.registry import ModelEntry, ModelRegistry


@dataclass
class LoadedModel:
    entry: ModelEntry
    pipeline: DiffusionPipeline
    hash: str


class ModelManager:
    """Loads models by name onto the configured device, keeping the ``capacity`` most recent."""

    def __init__(self, settings: Settings, capacity: int = 1):
        self.settings = settings
        self.registry = ModelRegistry(settings.models_dir)
        self.device = pick_device(settings.device)
        self.dtype = pick_dtype(self.device, settings.dtype)
        self.capacity = capacity
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, allow_paths: bool = False) -> LoadedModel:
        entry = self.registry.resolve(name, allow_paths=allow_paths)
        with self._lock:
            if entry.location in self._loaded:
                self._loaded.move_to_end(entry.location)
                return self._loaded[entry.location]
            known = [e.path for e in self.registry.entries() if e.format == "diffusers"]
            tokenizers = self.registry.models_dir / "tokenizers" if self.registry.models_dir else None
            pipeline = load_pipeline(entry, self.device, self.dtype, self.settings.allow_pickle, known, tokenizers)
            loaded = LoadedModel(entry, pipeline, model_hash(entry))
            self._loaded[entry.location] = loaded
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
            return loaded
