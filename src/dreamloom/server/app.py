"""The FastAPI application: services built once, the worker started with the server and
stopped with it, and the three APIs mounted over them."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from dreamloom import __version__
from dreamloom.config import Settings
from dreamloom.server import a1111, errors, jobs_api, openai_images, vision_api
from dreamloom.server.body_limit import BodySizeLimit
from dreamloom.server.config import ServerConfig
from dreamloom.service.studio import Studio


def create_app(config: ServerConfig | None = None, settings: Settings | None = None) -> FastAPI:
    config = config or ServerConfig()
    studio = Studio.build(config, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        studio.start()
        try:
            yield
        finally:
            studio.stop()

    app = FastAPI(title="dreamloom", version=__version__, lifespan=lifespan,
                  description="AUTOMATIC1111-compatible `/sdapi/v1`, OpenAI-compatible `/v1`, and dreamloom's "
                              "job API `/api/v1`, over one persistent job queue.")
    app.state.studio = studio
    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.limits.max_body_bytes)
    app.include_router(jobs_api.router)
    app.include_router(a1111.router)
    app.include_router(openai_images.router)
    app.include_router(vision_api.openai_router)
    app.include_router(vision_api.sdnext_router)
    if config.ui:
        from dreamloom.ui.app import mount_ui  # Gradio's import costs seconds; API-only servers skip it

        mount_ui(app, studio)
    return app
