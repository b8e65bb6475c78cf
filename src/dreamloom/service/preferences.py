"""Options that change what a request draws when it does not say: the default model and clip
skip (AUTOMATIC1111's ``sd_model_checkpoint`` and ``CLIP_stop_at_last_layers``) and the vision
model. The server's values are the operator's; any other principal's changes are their own
overlay, so no caller changes another's results."""

from __future__ import annotations

import threading

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dreamloom.generate.request import DEFAULT_MODEL, GenerationRequest
from dreamloom.service.errors import Forbidden, InvalidField
from dreamloom.service.principals import Principal

#: Most principals with their own overlay kept in memory (the oldest go first).
MAX_OVERLAYS = 10_000


class Preferences(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="The model of requests that name none.")
    clip_skip: int = Field(GenerationRequest.model_fields["clip_skip"].default, ge=1, le=12,
                           description="Clip skip of requests that set none (AUTOMATIC1111's CLIP_stop_at_last_layers).")
    vision: str | None = Field(None, description="The vision model of requests that name none (None: the server's).")


class PreferenceBook:
    """The server's preferences and each principal's overlay of them."""

    def __init__(self, server: Preferences):
        self.server = server
        self._overlays: dict[str, dict] = {}
        self._lock = threading.Lock()

    def of(self, principal: Principal) -> Preferences:
        with self._lock:
            overlay = self._overlays.get(principal.id, {})
            return self.server.model_copy(update=overlay)

    def update(self, principal: Principal, values: dict, server_wide: bool) -> Preferences:
        """Check ``values`` (already resolved names) and store them: server-wide for an operator
        who asks for it, else in the principal's own overlay. A non-operator asking for
        server-wide is ``Forbidden``."""
        if server_wide and not principal.operator:
            raise Forbidden("only the operator changes server-wide settings; yours are kept for you alone")
        try:
            checked = Preferences.model_validate({**self.server.model_dump(), **values})
        except ValidationError as error:
            raise InvalidField.from_validation(error) from None
        with self._lock:
            if server_wide:
                self.server = checked
                return checked
            overlay = self._overlays.pop(principal.id, {})
            overlay.update({name: getattr(checked, name) for name in values})
            self._overlays[principal.id] = overlay
            while len(self._overlays) > MAX_OVERLAYS:
                self._overlays.pop(next(iter(self._overlays)))
            return self.server.model_copy(update=overlay)
