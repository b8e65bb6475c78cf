"""The studio: the one object every front end calls. It is built once per process (a server,
the CLI) from the operator's config and holds the engine, the job store and its worker, the
request policy, the principals and the preferences. Every job read, download, cancel,
interrupt and skip checks ownership here, once, for every front end."""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dreamloom.config import Settings
from dreamloom.generate.engine import Engine
from dreamloom.generate.enhance import enhancement
from dreamloom.generate.hooks import Stage
from dreamloom.generate.request import GenerationRequest
from dreamloom.jobs import open_store
from dreamloom.jobs.generation import KIND as GENERATE
from dreamloom.jobs.generation import GenerationRunner, submit_generation
from dreamloom.jobs.model import Job, JobState
from dreamloom.jobs.store import JobStore, QueueFull
from dreamloom.jobs.training import KIND as TRAIN
from dreamloom.jobs.training import TrainingRefused, TrainingRunner, run_files, submit_training
from dreamloom.jobs.worker import Worker
from dreamloom.models.registry import ModelEntry
from dreamloom.service.config import ServiceConfig
from dreamloom.service.errors import Busy, Forbidden, InvalidField, NotFound
from dreamloom.service.policy import RequestPolicy, Trust
from dreamloom.service.preferences import PreferenceBook, Preferences
from dreamloom.service.principals import Authenticator, Principal
from dreamloom.service.vision import VisionChoices
from dreamloom.train.dreambooth.request import TrainingRequest
from dreamloom.vision.backends import VisionBackend
from dreamloom.vision.service import VisionConfig, VisionService


@dataclass
class Studio:
    config: ServiceConfig
    settings: Settings
    engine: Engine
    store: JobStore
    worker: Worker
    auth: Authenticator
    policy: RequestPolicy
    preferences: PreferenceBook
    vision: VisionChoices

    @classmethod
    def build(cls, config: ServiceConfig, settings: Settings | None = None) -> Studio:
        settings = settings or Settings.from_env()
        engine = Engine(settings)
        store = open_store(config.data_dir)
        runner = GenerationRunner(engine, store, config.preview_every)
        trainer = TrainingRunner(settings, store)
        # one name per host and data folder: a restarted server takes back its own previous run's jobs
        name = f"{socket.gethostname()}:{Path(config.data_dir).resolve()}"
        worker = Worker(store, {GENERATE: runner.run, TRAIN: trainer.run}, max_batch=config.batch_size,
                        batch_wait=config.batch_wait, name=name)
        policy = RequestPolicy(engine.models.registry, config.limits, settings.allow_pickle)
        server = Preferences()
        if config.default_model:
            server = Preferences(model=policy.model(config.default_model, field="default_model").name)
        vision = VisionChoices(VisionService(settings))
        # a request asking for enhancement (from any front end) is rewritten by the server's vision backend
        engine.hooks.add(Stage.prepare_request, enhancement(lambda prompt: vision.backend().enhance(prompt)))
        return cls(config, settings, engine, store, worker,
                   config.authenticator(), policy, PreferenceBook(server),
                   vision)

    def start(self) -> list[str]:
        """Requeue the jobs this server's previous run left running (and any other worker's whose
        lease expired), then start the worker. Returns the requeued job ids."""
        requeued = self.store.recover(worker=self.worker.name)
        self.worker.start()
        return requeued

    def stop(self) -> None:
        """Stop taking jobs; a batch still running is requeued by the next start if it does not end first."""
        self.worker.stop(timeout=5.0)

    # --- models --------------------------------------------------------------------------------

    def models(self) -> list[ModelEntry]:
        """The models a request may name (pickle ones only where the operator allowed them)."""
        return [entry for entry in self.engine.models.registry.entries() if self.policy.usable(entry)]

    def model_names(self) -> list[str]:
        return [entry.name for entry in self.models()]

    def loras(self) -> list[ModelEntry]:
        return [entry for entry in self.engine.models.registry.loras() if self.policy.usable(entry)]

    def shown(self, entry: ModelEntry) -> str:
        """An entry's location inside the models folder, as listings show it."""
        return self.engine.models.registry.shown(entry)

    def native_size(self, model: str) -> int | None:
        """A model's trained resolution from its configs (None when they do not say)."""
        try:
            return self.policy.model(model).native_size()
        except InvalidField:
            return None

    # --- preferences ---------------------------------------------------------------------------

    def preferences_of(self, principal: Principal) -> Preferences:
        return self.preferences.of(principal)

    def set_preferences(self, principal: Principal, server_wide: bool = False, **values) -> Preferences:
        """Change the default model, clip skip or vision model: the server's (operator only) or
        the caller's own. Names must resolve as a network request's would."""
        if values.get("model") is not None:
            values["model"] = self.policy.model(values["model"]).name
        if values.get("vision") is not None:
            values["vision"] = self.vision.check(values["vision"], "vision")
        return self.preferences.update(principal, values, server_wide)

    def with_preferences(self, principal: Principal, request: GenerationRequest, given: set[str]) -> GenerationRequest:
        """``request`` with the caller's preferred model and clip skip where it did not set them
        (``given``: the fields the caller sent)."""
        preferences = self.preferences.of(principal)
        defaults = {"model": preferences.model, "clip_skip": preferences.clip_skip}
        return request.model_copy(update={name: value for name, value in defaults.items() if name not in given})

    def configure_vision(self, principal: Principal, config: VisionConfig) -> None:
        """Point the server's vision backend somewhere else (the operator's alone: its key goes there)."""
        if not principal.operator:
            raise Forbidden("only the operator chooses the server's vision backend and endpoint; pick one of "
                            f"the configured models instead: {', '.join(self.vision.names())}")
        self.vision.configure(config)

    def vision_backend(self, principal: Principal, name: str | None = None) -> VisionBackend:
        """The vision backend a request gets: the one it names, else the caller's choice, else the server's."""
        return self.vision.backend(name or self.preferences.of(principal).vision)

    # --- jobs ----------------------------------------------------------------------------------

    def submit(self, principal: Principal, request: GenerationRequest, origin: str,
               trust: Trust = Trust.network) -> Job:
        """Queue ``request`` for ``principal`` once the policy accepts it."""
        self.policy.generation(request, trust)
        try:
            return submit_generation(self.store, request, principal.id, self.config.limits.max_queue, origin,
                                     self.config.limits.max_queue_per_principal)
        except QueueFull as error:
            raise Busy(str(error)) from None

    def submit_training(self, principal: Principal, request: TrainingRequest, images: list[Image.Image],
                        origin: str) -> Job:
        """Queue a DreamBooth run on ``images``; its base model resolves as any network request's."""
        self.policy.model(request.base_model, field="base_model")
        if any(job.request.get("name") == request.name for state in (JobState.queued, JobState.running)
               for job in self.store.jobs(state=state, limit=self.config.limits.max_queue) if job.kind == TRAIN):
            raise InvalidField("name", f"{request.name!r} is being trained by another job; choose another name")
        for i, image in enumerate(images):
            if image.width * image.height > self.policy.max_pixels:
                raise InvalidField(("images", i), f"{image.width}x{image.height} is over this server's limit")
        try:
            return submit_training(self.store, self.settings, request, images, principal.id,
                                   self.config.limits.max_queue, origin, self.config.limits.max_queue_per_principal)
        except QueueFull as error:
            raise Busy(str(error)) from None
        except TrainingRefused as error:
            raise InvalidField(error.field, error.message) from None

    def job(self, principal: Principal, job_id: str) -> Job:
        """The caller's job; another principal's is answered as if it did not exist."""
        job = self.store.get(job_id) if job_id.isalnum() else None
        if job is None or job.owner != principal.id:
            raise NotFound(f"no job {job_id!r}")
        return job

    def jobs(self, principal: Principal, state: JobState | None = None, kind: str | None = None,
             limit: int = 100) -> list[Job]:
        """The caller's newest jobs, optionally of one state and kind."""
        jobs = self.store.jobs(state=state, owner=principal.id, limit=limit)
        return [job for job in jobs if kind is None or job.kind == kind]

    def counts(self, principal: Principal) -> dict[str, int]:
        """How many of the caller's jobs are in each state."""
        return self.store.counts(owner=principal.id)

    def cancel(self, principal: Principal, job_id: str) -> Job:
        self.job(principal, job_id)
        return self.store.request_cancel(job_id)

    def interrupt(self, principal: Principal, job_id: str | None = None, skip: bool = False) -> list[str]:
        """AUTOMATIC1111's interrupt (stop now, keep what is drawn) or skip (drop the current
        batch) of one running job of the caller's, or of all of them. Returns their ids."""
        jobs = [self.job(principal, job_id)] if job_id else self.jobs(principal, JobState.running,
                                                                      limit=self.config.limits.max_queue)
        for job in jobs:
            self.store.request_interrupt(job.id, skip=skip)
        return [job.id for job in jobs]

    def preview(self, principal: Principal, job_id: str) -> bytes | None:
        self.job(principal, job_id)
        return self.store.preview(job_id)

    def output(self, principal: Principal, job_id: str, name: str) -> Path:
        self.job(principal, job_id)
        path = self.store.blobs.output_path(job_id, name)
        if path is None:
            raise NotFound(f"job {job_id} has no file {name!r}")
        return path

    def outputs(self, principal: Principal, job: Job) -> list[Path]:
        """The caller's job's output images, in order."""
        self.job(principal, job.id)
        return [p for name in job.result.get("files", [])
                if (p := self.store.blobs.output_path(job.id, name)) is not None]

    def images_b64(self, principal: Principal, job: Job) -> list[str]:
        return [base64.b64encode(path.read_bytes()).decode() for path in self.outputs(principal, job)]

    def training_files(self, principal: Principal, job_id: str) -> tuple[Path | None, list[Path]]:
        """The caller's training job's loss chart (once drawn) and sample grids, oldest first."""
        self.job(principal, job_id)
        return run_files(self.store, job_id)

    async def changes(self, principal: Principal, job_id: str,
                      disconnected: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[Job]:
        """The caller's job now and after every change, until it finishes (or ``disconnected()``
        says the client left)."""
        self.job(principal, job_id)
        async with aclosing(self.store.watch(job_id)) as jobs:  # a client that leaves ends the subscription now
            async for job in jobs:
                yield job
                if disconnected is not None and await disconnected():
                    return

    async def wait(self, principal: Principal, job_id: str) -> Job | None:
        """The caller's job once it is finished."""
        self.job(principal, job_id)
        return await self.store.wait(job_id)
