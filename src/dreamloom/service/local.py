"""The command line's service: the operator at their own machine. The same request policy as
the server's (names resolve through the registry, hub ids only where allowed), with the local
trust that lets a name be a path and no server limits; no queue, no principals. Cheap to import
(the engine loads only when something is drawn), so every refusal answers before torch does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dreamloom.config import Settings
from dreamloom.generate.request import GenerationRequest
from dreamloom.models.registry import ModelEntry, ModelRegistry
from dreamloom.service.policy import RequestPolicy, Trust
from dreamloom.vision.backends import VisionBackend
from dreamloom.vision.service import VisionConfig, open_backend


class LocalStudio:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.registry = ModelRegistry.of(settings)
        self.policy = RequestPolicy(self.registry, allow_pickle=settings.allow_pickle)
        self._engine = None

    def check(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` once its model and LoRAs resolve (paths allowed); an ``InvalidField`` otherwise."""
        return self.policy.generation(request, Trust.local)

    def model(self, name: str) -> ModelEntry:
        return self.policy.model(name, Trust.local)

    def vision_backend(self, config: VisionConfig) -> VisionBackend:
        """The vision model ``config`` names: a local name or folder, or a remote endpoint."""
        return open_backend(config, self.settings, allow_paths=True)

    @property
    def engine(self):
        """The generation engine, loaded on first use (measurement commands drive it directly)."""
        if self._engine is None:
            from dreamloom.generate.engine import Engine

            self._engine = Engine(self.settings)
        return self._engine

    def generate(self, request: GenerationRequest, output_dir: Path | None = None, progress=None,
                 enhance: Callable[[str], str] | None = None) -> list[Path]:
        """Draw ``request`` and write its PNGs (with their infotexts); returns their paths.
        ``enhance`` rewrites the prompt of a request that asks for it (the engine records the
        prompt as written)."""
        from dreamloom.generate.enhance import enhancement
        from dreamloom.generate.hooks import Stage

        self.check(request)
        engine = self.engine
        if enhance is not None:
            engine.hooks.add(Stage.prepare_request, enhancement(enhance))
        result = engine.generate(request, progress=progress, allow_paths=True)
        return engine.save(result, output_dir)
