"""Server settings: where it listens, who may call it, and the limits on what a request may ask."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class ServerLimits(BaseModel):
    """Bounds on one request and on the queue; a request beyond them gets a 4xx naming the field."""

    max_width: int = Field(2048, ge=8, description="Largest width in pixels.")
    max_height: int = Field(2048, ge=8, description="Largest height in pixels.")
    max_steps: int = Field(150, ge=1, description="Most denoising steps.")
    max_batch_size: int = Field(16, ge=1, description="Most images in one request's batch.")
    max_n_iter: int = Field(16, ge=1, description="Most batches one after another in one request.")
    max_queue: int = Field(256, ge=1, description="Most jobs queued or running at once; more gets 429.")
    max_body_bytes: int = Field(50 * 2**20, ge=1024, description="Largest request body; more gets 413.")


class ServerConfig(BaseModel):
    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps the server local.")
    port: int = Field(7860, ge=0, le=65535, description="Port (AUTOMATIC1111's default).")
    api_keys: list[str] = Field(default_factory=list, description="Accepted `Authorization: Bearer` keys.")
    users: dict[str, str] = Field(default_factory=dict, description="HTTP basic auth: user -> password.")
    batch_size: int = Field(8, ge=1, description="Most images the worker draws in one forward pass across "
                                                 "queued jobs; 1 runs one job at a time.")
    batch_wait: float = Field(0.05, ge=0.0, le=10.0, description="Seconds the worker waits for compatible jobs "
                                                                 "to fill a batch that has room.")
    preview_every: int = Field(5, ge=0, description="Decode a preview every N steps (0: none).")
    ui: bool = Field(True, description="Serve the web UI at / (the APIs keep their paths).")
    data_dir: Path = Field(Path("outputs/server"), description="The job database and every job's files.")
    limits: ServerLimits = Field(default_factory=ServerLimits)

    @property
    def auth_required(self) -> bool:
        return bool(self.api_keys or self.users)
