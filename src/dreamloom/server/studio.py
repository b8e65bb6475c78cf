"""The services every router shares (engine, job store, worker, limits), built once per app
and reached through ``request.app.state.studio``, never through module globals."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import HTTPException, Request
from PIL import Image

from dreamloom.config import Settings
from dreamloom.generate.engine import Engine
from dreamloom.generate.lora_syntax import lora_weights
from dreamloom.generate.request import DEFAULT_MODEL, GenerationRequest
from dreamloom.jobs.events import JobEvents
from dreamloom.jobs.files import JobFiles
from dreamloom.jobs.generation import KIND as GENERATE
from dreamloom.jobs.generation import GenerationRunner, submit_generation
from dreamloom.jobs.model import Job
from dreamloom.jobs.store import QueueFull, SQLiteJobStore
from dreamloom.jobs.training import KIND as TRAIN
from dreamloom.jobs.training import TrainingRefused, TrainingRunner, submit_training
from dreamloom.jobs.worker import Worker
from dreamloom.server.config import ServerConfig
from dreamloom.server.errors import field_error
from dreamloom.train.dreambooth.request import TrainingRequest
from dreamloom.vision.service import VisionService


@dataclass
class Studio:
    config: ServerConfig
    settings: Settings
    engine: Engine
    store: SQLiteJobStore
    files: JobFiles
    events: JobEvents
    worker: Worker
    #: The vision models, each loaded by the first request that asks for it.
    vision: VisionService
    #: AUTOMATIC1111 options set through ``POST /sdapi/v1/options`` (``sd_model_checkpoint`` picks the model).
    options: dict = field(default_factory=dict)

    @classmethod
    def build(cls, config: ServerConfig, settings: Settings | None = None) -> Studio:
        settings = settings or Settings.from_env()
        engine = Engine(settings)
        store = SQLiteJobStore(config.data_dir / "jobs.sqlite")
        files = JobFiles(config.data_dir / "jobs")
        events = JobEvents()
        runner = GenerationRunner(engine, store, files, events, config.preview_every)
        trainer = TrainingRunner(settings, store, files, events)
        worker = Worker(store, {GENERATE: runner.run, TRAIN: trainer.run}, max_batch=config.batch_size,
                        on_change=events.publish, batch_wait=config.batch_wait)
        return cls(config, settings, engine, store, files, events, worker, VisionService(settings),
                   {"sd_model_checkpoint": DEFAULT_MODEL})

    def start(self) -> list[str]:
        """Requeue the jobs a previous run left running (this server is their only worker), then
        start the worker. Returns the requeued job ids."""
        requeued = self.store.recover(stale_after=0.0)
        self.worker.start()
        return requeued

    def stop(self) -> None:
        """Stop taking jobs; a batch still running is requeued by the next start if it does not end first."""
        self.worker.stop(timeout=5.0)

    @property
    def default_model(self) -> str:
        return self.options.get("sd_model_checkpoint") or DEFAULT_MODEL

    def model_names(self) -> list[str]:
        return [entry.name for entry in self.engine.models.registry.entries()]

    def check(self, request: GenerationRequest) -> None:
        """Refuse, with a 422 naming the field, what the limits forbid or the folders lack."""
        limits = self.config.limits
        for name, limit in (("width", limits.max_width), ("height", limits.max_height), ("steps", limits.max_steps),
                            ("batch_size", limits.max_batch_size), ("n_iter", limits.max_n_iter)):
            value = getattr(request, name)
            if value is not None and value > limit:
                raise field_error(name, f"{value} is over this server's limit of {limit}")
        registry = self.engine.models.registry
        if request.model not in self.model_names():
            raise field_error("model", f"unknown model {request.model!r}; available: {', '.join(self.model_names())}")
        for name in lora_weights(request.prompt, request.loras):
            try:
                registry.resolve_lora(name)
            except ValueError as error:
                raise field_error("loras", str(error)) from None

    def submit(self, request: GenerationRequest, owner: str, origin: str) -> Job:
        self.check(request)
        try:
            return submit_generation(self.store, self.files, request, owner, self.config.limits.max_queue, origin)
        except QueueFull as error:
            raise HTTPException(429, str(error)) from None

    def submit_training(self, request: TrainingRequest, images: list[Image.Image], owner: str, origin: str) -> Job:
        """Queue a DreamBooth run; a 422 names what is wrong with it, a 429 says the queue is full."""
        try:
            return submit_training(self.store, self.files, self.settings, request, images, owner,
                                   self.config.limits.max_queue, origin)
        except QueueFull as error:
            raise HTTPException(429, str(error)) from None
        except TrainingRefused as error:
            raise field_error(error.field, error.message) from None

    def job(self, job_id: str, owner: str) -> Job:
        """The caller's job, or 404 (another caller's job is not theirs to see)."""
        job = self.store.get(job_id) if job_id.isalnum() else None
        if job is None or (owner and job.owner != owner):
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    async def changes(self, job_id: str, request: Request | None = None) -> AsyncIterator[Job]:
        """The job now and after every change, until it is finished (or the client leaves)."""
        token = self.events.subscribe(job_id)
        _, changed = token
        try:
            while True:
                changed.clear()
                job = self.store.get(job_id)
                if job is None:
                    return
                yield job
                if job.state.finished:
                    return
                if request is not None and await request.is_disconnected():
                    return
                try:  # the timeout only guards against a change published by another process
                    await asyncio.wait_for(changed.wait(), timeout=5.0)
                except TimeoutError:
                    pass
        finally:
            self.events.unsubscribe(job_id, token)

    async def wait(self, job_id: str) -> Job:
        job = None
        async for job in self.changes(job_id):
            pass
        return job

    def images_b64(self, job: Job) -> list[str]:
        return [base64.b64encode(path.read_bytes()).decode() for path in self.output_paths(job)]

    def output_paths(self, job: Job) -> list:
        return [p for name in job.result.get("files", []) if (p := self.files.output(job.id, name)) is not None]


def studio_of(request: Request) -> Studio:
    return request.app.state.studio
