"""What a request may ask, written once for every front end: the operator's limits, images
decoded under a pixel cap, and model and LoRA names resolved by trust — a network request
(the APIs, the page) reaches only the entries the registry lists, never a path or a hub id;
the local command line may name paths; hub ids resolve only where the operator allowed them."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from PIL import Image

from dreamloom.generate.lora_syntax import lora_weights
from dreamloom.generate.request import GenerationRequest
from dreamloom.images import MAX_PIXELS, decode_base64_image, decode_image
from dreamloom.models.registry import ModelEntry, ModelRegistry
from dreamloom.service.config import ServerLimits
from dreamloom.service.errors import InvalidField, Loc


class Trust(str, Enum):
    """How far a request's names may reach."""

    network = "network"  #: listed entries only
    local = "local"  #: listed entries and filesystem paths (the operator's own command line)


#: The request fields a server limit bounds, and the limit's name.
_LIMITED = {"width": "max_width", "height": "max_height", "steps": "max_steps", "batch_size": "max_batch_size",
            "n_iter": "max_n_iter"}


class RequestPolicy:
    """Checks requests against the registry and, for network requests, the operator's limits."""

    def __init__(self, registry: ModelRegistry, limits: ServerLimits | None = None, allow_pickle: bool = False):
        self.registry, self.limits, self.allow_pickle = registry, limits, allow_pickle

    def usable(self, entry: ModelEntry) -> bool:
        """Whether ``entry`` may load here: pickle weights only where the operator allowed them."""
        return self.allow_pickle or not entry.pickle

    def _checked(self, entry: ModelEntry, field: str | Loc) -> ModelEntry:
        if not self.usable(entry):
            raise InvalidField(field, f"{entry.name} holds pickle weights, which can run code when loaded; they "
                                      "load only where the operator allows them (--allow-pickle)")
        return entry

    @property
    def max_pixels(self) -> int:
        return self.limits.max_image_pixels if self.limits else MAX_PIXELS

    def image(self, data: str | bytes, field: str | Loc) -> Image.Image:
        """A base64 string (``data:`` prefix allowed) or encoded bytes as an image; an
        ``InvalidField`` naming ``field`` when it is not one or is over the pixel cap."""
        what = ".".join(map(str, field)) if isinstance(field, tuple) else field
        try:
            if isinstance(data, bytes):
                return decode_image(data, what, self.max_pixels)
            return decode_base64_image(data, what, self.max_pixels)
        except ValueError as error:
            raise InvalidField(field, str(error).removeprefix(f"{what} ")) from None

    def model(self, name: str, trust: Trust = Trust.network, field: str | Loc = "model") -> ModelEntry:
        return self._resolved(self.registry.resolve, name, trust, field)

    def lora(self, name: str, trust: Trust = Trust.network, field: str | Loc = "loras") -> ModelEntry:
        return self._resolved(self.registry.resolve_lora, name, trust, field)

    def _resolved(self, resolve: Callable[..., ModelEntry], name: str, trust: Trust, field: str | Loc) -> ModelEntry:
        """``resolve(name)`` with paths allowed by ``trust`` only, its refusal an ``InvalidField``
        naming ``field``, and pickle weights only where the operator allowed them."""
        try:
            entry = resolve(name, allow_paths=trust == Trust.local)
        except ValueError as error:
            raise InvalidField(field, str(error)) from None
        return self._checked(entry, field)

    def generation(self, request: GenerationRequest, trust: Trust = Trust.network) -> GenerationRequest:
        """``request`` itself once its sizes are within the limits and its model and LoRAs resolve."""
        if trust == Trust.network and self.limits is not None:
            for name, limit_name in _LIMITED.items():
                value, limit = getattr(request, name), getattr(self.limits, limit_name)
                if value is not None and value > limit:
                    raise InvalidField(name, f"{value} is over this server's limit of {limit}")
            for name in ("init_image", "mask"):
                image = getattr(request, name)
                if image is not None and image.width * image.height > self.max_pixels:
                    raise InvalidField(name, f"{image.width}x{image.height} is over this server's limit of "
                                             f"{self.max_pixels} pixels")
        entry = self.model(request.model, trust)
        layers = entry.text_encoder_layers()
        if layers is not None and request.clip_skip > layers:
            raise InvalidField("clip_skip", f"{request.clip_skip} is deeper than {entry.name}'s text encoder "
                                            f"({layers} layers); the most it allows is {layers}")
        for name in lora_weights(request.prompt, request.loras):
            self.lora(name, trust)
        return request
