"""Which vision backend answers whom. The operator sets the server's backend (a local model
of the models folder, or a remote OpenAI-compatible endpoint with the server's key); a user
chooses, per request or for themselves, only among what the operator made available, so the
server's key goes to the operator's endpoint and nowhere else."""

from __future__ import annotations

import os
import threading

from dreamloom.service.errors import InvalidField
from dreamloom.vision.backends import VisionBackend
from dreamloom.vision.service import DEFAULT_REMOTE_MODEL, VisionConfig, VisionService

#: A remote choice's name: this prefix and the endpoint's model id.
REMOTE_PREFIX = "remote:"


def _initial_config() -> VisionConfig:
    """The server's backend at start: the remote endpoint of ``$DREAMLOOM_VISION_BASE_URL`` if
    the operator set one, else the default local model."""
    base_url = os.environ.get("DREAMLOOM_VISION_BASE_URL")
    return VisionConfig(backend="remote", base_url=base_url) if base_url else VisionConfig()


class VisionChoices:
    """The local vision models plus (at most) the operator's remote endpoint, by name."""

    def __init__(self, local: VisionService, config: VisionConfig | None = None):
        self.local = local
        self._lock = threading.Lock()
        self._remote: VisionBackend | None = None
        self.config = config or _initial_config()

    @property
    def remote_name(self) -> str | None:
        if self.config.backend != "remote" or not self.config.base_url:
            return None
        return REMOTE_PREFIX + (self.config.model or DEFAULT_REMOTE_MODEL)

    @property
    def default(self) -> str:
        return self.remote_name or self.config.model or self.local.default

    def names(self) -> list[str]:
        return [*self.local.model_names(), *([self.remote_name] if self.remote_name else [])]

    def describe(self) -> str:
        if self.remote_name:
            return f"remote: {self.config.model or DEFAULT_REMOTE_MODEL} at {self.config.base_url}"
        return f"local: {self.default}"

    def configure(self, config: VisionConfig) -> None:
        """The operator's choice of the server's backend (the caller checks who is asking)."""
        if config.backend == "remote" and not config.base_url:
            raise InvalidField("base_url", "a remote backend needs the endpoint's URL")
        if config.backend == "local" and config.model and config.model not in self.local.model_names():
            raise InvalidField("model", f"vision model {config.model!r} not found; available: "
                                        f"{', '.join(self.local.model_names())}")
        with self._lock:
            self.config, self._remote = config, None

    def check(self, name: str | None, field: str = "model") -> str:
        """``name`` (None: the server's default) if it is one of the choices; else an InvalidField."""
        if name is None or name == self.default:
            return self.default
        if name in self.names():
            return name
        raise InvalidField(field, f"vision model {name!r} not found; available: {', '.join(self.names())}")

    def backend(self, name: str | None = None) -> VisionBackend:
        """The backend called ``name`` (None: the server's default), loaded or opened on first use."""
        name = self.check(name)
        if name != self.remote_name:
            try:
                return self.local.backend(name)
            except ValueError as error:
                raise InvalidField("model", str(error)) from None
        from dreamloom.vision.remote import RemoteBackend

        with self._lock:
            if self._remote is None:
                config = self.config
                self._remote = RemoteBackend(config.base_url, config.model or DEFAULT_REMOTE_MODEL,
                                             options=config.options, timeout=config.timeout)
            return self._remote
