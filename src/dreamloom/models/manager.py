"""Keeps loaded pipelines, and the LoRAs loaded into them, so repeated requests reload nothing."""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from diffusers import DiffusionPipeline

from dreamloom.config import Settings
from dreamloom.models.loading import model_hash
from dreamloom.models.lora import load_lora, lora_hash, weights_file
from dreamloom.models.registry import ModelEntry, ModelRegistry
from dreamloom.runtime.backend import Backend, WeightSource
from dreamloom.runtime.diffusers_backend import DiffusersBackend
from dreamloom.runtime.plan import LoadPlan


@dataclass(frozen=True)
class LoadedLora:
    """A LoRA living in a pipeline as a peft adapter; ``mtime_ns`` tells a rewritten file."""

    adapter: str
    mtime_ns: int
    hash: str


@dataclass
class LoadedModel:
    """A pipeline and the LoRAs loaded into it (by file location). ``lock`` is held by
    whoever sets its LoRAs and generates with it: the adapters live in the pipeline's
    modules, which every per-request pipeline (``from_pipe``) shares."""

    entry: ModelEntry
    pipeline: DiffusionPipeline
    hash: str
    loras: dict[str, LoadedLora] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapter_ids: Iterator[int] = field(default_factory=itertools.count)


class ModelManager:
    """Loads models by name through a runtime ``backend`` as its load ``plan`` says (default: the
    diffusers backend, everything on the configured device), keeping the ``capacity`` most recent.
    This is the engine's only path to weights."""

    def __init__(self, settings: Settings, capacity: int = 1, backend: Backend | None = None,
                 plan: LoadPlan | None = None):
        self.settings = settings
        self.registry = ModelRegistry.of(settings)
        self.backend: Backend = backend or DiffusersBackend()
        self.plan = plan or LoadPlan.from_settings(settings)
        self.capacity = capacity
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, allow_paths: bool = False) -> LoadedModel:
        entry = self.registry.resolve(name, allow_paths=allow_paths)
        with self._lock:
            if entry.location in self._loaded:
                self._loaded.move_to_end(entry.location)
                return self._loaded[entry.location]
            pipeline = self.backend.load(entry, self.plan, self._source())
            loaded = LoadedModel(entry, pipeline, model_hash(entry))
            self._loaded[entry.location] = loaded
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
            return loaded

    def _source(self) -> WeightSource:
        """Where weights may come from: the operator's pickle choice, the local diffusers folders a
        single-file checkpoint may take configs from, the models folder's tokenizers."""
        known = [e.path for e in self.registry.entries() if e.format == "diffusers"]
        tokenizers = self.registry.models_dir / "tokenizers" if self.registry.models_dir else None
        return WeightSource(self.settings.allow_pickle, known, tokenizers)

    @contextmanager
    def with_loras(
        self, loaded: LoadedModel, weights: dict[str, float], allow_paths: bool = False
    ) -> Iterator[dict[str, str]]:
        """Hold ``loaded`` for one generation with exactly the LoRAs ``weights`` names (name ->
        weight) active, and yield each name's short hash for the infotext.

        A LoRA is loaded once per model and kept; one not asked for is inactive, and with none
        asked for every adapter is disabled, so the base model's images come back bit for bit.
        Every name is resolved before anything changes, so an unknown one fails cleanly."""
        entries = {name: self.registry.resolve_lora(name, allow_paths=allow_paths) for name in weights}
        with loaded.lock:
            adapters: dict[str, float] = {}
            for name, entry in entries.items():
                adapter = self._load_lora(loaded, entry).adapter
                adapters[adapter] = adapters.get(adapter, 0.0) + weights[name]
            if adapters:
                loaded.pipeline.enable_lora()
                loaded.pipeline.set_adapters(list(adapters), adapter_weights=list(adapters.values()))
            elif loaded.loras:
                loaded.pipeline.disable_lora()
            yield {name: loaded.loras[entry.location].hash for name, entry in entries.items()}

    def _load_lora(self, loaded: LoadedModel, entry: ModelEntry) -> LoadedLora:
        """The LoRA of ``entry`` in ``loaded``'s pipeline, (re)loaded if new or rewritten since."""
        mtime_ns = weights_file(entry).stat().st_mtime_ns
        known = loaded.loras.get(entry.location)
        if known is not None and known.mtime_ns == mtime_ns:
            return known
        if known is not None:
            loaded.pipeline.delete_adapters(known.adapter)
        adapter = f"lora_{next(loaded.adapter_ids)}"
        load_lora(loaded.pipeline, entry, adapter, self.settings.allow_pickle)
        loaded.loras[entry.location] = LoadedLora(adapter, mtime_ns, lora_hash(entry))
        return loaded.loras[entry.location]
