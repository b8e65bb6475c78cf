"""The HTTP APIs as one FastAPI application over a studio: the worker started with the server
and stopped with it, the service's errors answered as HTTP, and the three APIs mounted."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from dreamloom import __version__
from dreamloom.server import a1111, errors, jobs_api, openai_images, vision_api
from dreamloom.server.body_limit import BodySizeLimit
from dreamloom.service.studio import Studio


def create_api(studio: Studio) -> FastAPI:
    """The APIs over ``studio``, which starts and stops with the application."""

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
    app.add_middleware(BodySizeLimit, max_bytes=studio.config.limits.max_body_bytes)
    app.include_router(jobs_api.router)
    app.include_router(a1111.router)
    app.include_router(openai_images.router)
    app.include_router(vision_api.openai_router)
    app.include_router(vision_api.sdnext_router)
    return app
