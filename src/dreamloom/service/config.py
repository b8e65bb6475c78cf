"""What the operator decides when the service starts: who may call it, the limits on what a
request may ask, where jobs live, how the worker batches. Front ends add their own settings
(an HTTP server its address) on top."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from dreamloom.service.principals import Authenticator


class ServerLimits(BaseModel):
    """Bounds on one request and on the queue; a request beyond them gets a 4xx naming the field."""

    max_width: int = Field(2048, ge=8, description="Largest width in pixels.")
    max_height: int = Field(2048, ge=8, description="Largest height in pixels.")
    max_steps: int = Field(150, ge=1, description="Most denoising steps.")
    max_batch_size: int = Field(16, ge=1, description="Most images in one request's batch.")
    max_n_iter: int = Field(16, ge=1, description="Most batches one after another in one request.")
    max_queue: int = Field(256, ge=1, description="Most jobs queued or running at once; more gets 429.")
    max_queue_per_principal: int = Field(64, ge=1, description="Most jobs one principal (a user, an API key) may "
                                                              "have queued or running; more gets 429.")
    max_body_bytes: int = Field(50 * 2**20, ge=1024, description="Largest request body; more gets 413.")
    max_image_pixels: int = Field(16_777_216, ge=64, description="Most pixels of an image a request sends "
                                                                 "(width x height, before decoding); more gets 422.")


class ServiceConfig(BaseModel):
    api_keys: list[str] = Field(default_factory=list, description="Accepted `Authorization: Bearer` keys; each is "
                                                                  "its own principal.")
    users: dict[str, str] = Field(default_factory=dict, description="HTTP basic auth: user -> password.")
    operators: list[str] = Field(default_factory=list, description="Users (or API-key ids, key:<sha256 prefix>) who "
                                                                   "may change server-wide settings; without "
                                                                   "credentials the one local user is the operator.")
    default_model: str | None = Field(None, description="The model requests get when they name none "
                                                        "(AUTOMATIC1111's sd_model_checkpoint).")
    batch_size: int = Field(8, ge=1, description="Most images the worker draws in one forward pass across "
                                                 "queued jobs; 1 runs one job at a time.")
    batch_wait: float = Field(0.05, ge=0.0, le=10.0, description="Seconds the worker waits for compatible jobs "
                                                                 "to fill a batch that has room.")
    preview_every: int = Field(5, ge=0, description="Decode a preview every N steps (0: none).")
    data_dir: Path = Field(Path("outputs/server"), description="The job database and every job's files.")
    limits: ServerLimits = Field(default_factory=ServerLimits)

    @property
    def auth_required(self) -> bool:
        return bool(self.api_keys or self.users)

    @model_validator(mode="after")
    def _principals_are_well_formed(self) -> ServiceConfig:
        """User names and operators are checked when the config is made, before a server starts."""
        self.authenticator()
        return self

    def authenticator(self) -> Authenticator:
        return Authenticator(self.users, self.api_keys, self.operators)
