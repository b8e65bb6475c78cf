"""The server's settings: the service's (who may call it, limits, jobs) and where it listens."""

from __future__ import annotations

from pydantic import Field

from dreamloom.service.config import ServiceConfig


class ServerConfig(ServiceConfig):
    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps the server local, "
                                                  "0.0.0.0 exposes it to the network.")
    port: int = Field(7860, ge=0, le=65535, description="Port (AUTOMATIC1111's default).")
    ui: bool = Field(True, description="Serve the web UI at / (off: the APIs only, at the same paths).")
