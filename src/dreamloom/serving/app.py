"""What ``dreamloom serve`` runs: one studio, the HTTP APIs over it and, unless turned off, the
web UI beside them. The one place the two front ends meet; neither imports the other."""

from __future__ import annotations

from fastapi import FastAPI

from dreamloom.config import Settings
from dreamloom.server.app import create_api
from dreamloom.serving.config import ServerConfig
from dreamloom.service.studio import Studio

__all__ = ["ServerConfig", "create_app"]


def create_app(config: ServerConfig | None = None, settings: Settings | None = None) -> FastAPI:
    config = config or ServerConfig()
    studio = Studio.build(config, settings)
    app = create_api(studio)
    if config.ui:
        from dreamloom.ui.app import mount_ui  # Gradio's import costs seconds; API-only servers skip it

        mount_ui(app, studio)
    return app
