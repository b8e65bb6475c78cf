"""Choosing and holding vision backends: ``VisionConfig`` says which model and where (typed
once, so the CLI's options come from it), ``open_backend`` opens one for a command, and
``VisionService`` keeps a long-lived caller's (the server's) models loaded by name."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from dreamloom.config import Settings
from dreamloom.vision.backends import GenerationOptions, VisionBackend
from dreamloom.vision.registry import DEFAULT_VISION_MODEL, VisionModelEntry, resolve_vision_model, vision_models

#: A remote endpoint's model when none is named: Llama 4's larger released model.
DEFAULT_REMOTE_MODEL = "meta-llama/llama-4-maverick"


class VisionConfig(BaseModel):
    """Which vision model answers, and how."""

    backend: Literal["local", "remote"] = Field("local", description="local: run the model here (transformers); "
                                                                     "remote: an OpenAI-compatible endpoint.")
    model: str | None = Field(None, description=f"Model name or path (local, default {DEFAULT_VISION_MODEL}) or "
                                                f"the endpoint's model id (remote, default {DEFAULT_REMOTE_MODEL}).")
    base_url: str | None = Field(None, description="Remote endpoint ending in /v1 (default $DREAMLOOM_VISION_BASE_URL); "
                                                   "key from $DREAMLOOM_VISION_API_KEY or $OPENAI_API_KEY.")
    max_new_tokens: int = Field(128, ge=1, le=8192, description="Most tokens per answer.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy, repeatable answers; above 0: sampling.")
    timeout: float = Field(60.0, gt=0, description="Remote: seconds to wait for an answer.")

    @property
    def options(self) -> GenerationOptions:
        return GenerationOptions(max_new_tokens=self.max_new_tokens, temperature=self.temperature)


def load_local(entry: VisionModelEntry, settings: Settings, options: GenerationOptions | None = None) -> VisionBackend:
    from dreamloom.vision.local import LocalBackend

    return LocalBackend.load(entry.location, entry.name, settings.device, settings.dtype, options)


def open_backend(config: VisionConfig, settings: Settings, allow_paths: bool = False) -> VisionBackend:
    """The backend ``config`` describes; ``allow_paths`` lets a local model be a folder path or
    hub id (the command line's right, never a request's)."""
    if config.backend == "remote":
        from dreamloom.vision.remote import RemoteBackend

        base_url = config.base_url or os.environ.get("DREAMLOOM_VISION_BASE_URL")
        if not base_url:
            raise ValueError("--base-url: a remote backend needs the endpoint's URL (or $DREAMLOOM_VISION_BASE_URL)")
        return RemoteBackend(base_url, config.model or DEFAULT_REMOTE_MODEL, options=config.options,
                             timeout=config.timeout)
    entry = resolve_vision_model(config.model or DEFAULT_VISION_MODEL, settings.models_dir, allow_paths)
    return load_local(entry, settings, config.options)


Loader = Callable[[VisionModelEntry, Settings], VisionBackend]


class VisionService:
    """The vision models of the models folder, each loaded on its first use and then kept.
    Names only: a request cannot reach a path. ``loader`` opens an entry (tests inject one)."""

    def __init__(self, settings: Settings, loader: Loader = load_local, default: str = DEFAULT_VISION_MODEL):
        self.settings, self.loader, self.default = settings, loader, default
        self._backends: dict[str, VisionBackend] = {}
        self._lock = threading.Lock()

    def models(self) -> list[VisionModelEntry]:
        return vision_models(self.settings.models_dir)

    def model_names(self) -> list[str]:
        return [entry.name for entry in self.models()]

    def backend(self, name: str | None = None) -> VisionBackend:
        """The loaded model called ``name`` (default: the embedded model); a ValueError names
        the available ones when there is no such model."""
        entry = resolve_vision_model(name or self.default, self.settings.models_dir)
        with self._lock:  # one load per model, however many requests arrive for it at once
            if entry.name not in self._backends:
                self._backends[entry.name] = self.loader(entry, self.settings)
            return self._backends[entry.name]
