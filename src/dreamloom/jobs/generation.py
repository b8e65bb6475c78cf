"""Generation as jobs: submitting a request (seed fixed at once, inputs stored beside it) and
running claimed jobs through the engine together, each image what its job alone would draw."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field

from dreamloom.generate.batched import BatchMember, batch_key
from dreamloom.generate.engine import Engine
from dreamloom.generate.progress import GenerationCancelled, StepProgress
from dreamloom.generate.request import GenerationRequest, GenerationResult
from dreamloom.generate.seeds import resolve_seed
from dreamloom.jobs.events import JobEvents
from dreamloom.jobs.files import JobFiles
from dreamloom.jobs.model import Job, JobState
from dreamloom.jobs.reporting import JobReporter, describe
from dreamloom.jobs.store import JobStore, new_job_id

KIND = "generate"
_INPUTS = ("init_image", "mask")


def submit_generation(
    store: JobStore, files: JobFiles, request: GenerationRequest, owner: str = "",
    max_queued: int | None = None, origin: str = "api",
) -> Job:
    """Queue ``request`` as a job. A random seed (-1) is drawn now and stored, so a job that
    restarts after a crash draws the same images. ``origin`` records which API submitted it."""
    request = request.model_copy(update={"seed": resolve_seed(request.seed)})
    job_id = new_job_id()
    for name in _INPUTS:
        if getattr(request, name) is not None:
            files.save_input(job_id, name, getattr(request, name))
    key = batch_key(request)
    data = {**request.model_dump(mode="json"), "origin": origin}
    try:
        return store.submit(KIND, data, owner=owner, batch_key=None if key is None else json.dumps(key, default=str),
                            images=request.batch_size, max_queued=max_queued, job_id=job_id)
    except BaseException:
        files.remove(job_id)
        raise


def load_request(job: Job, files: JobFiles) -> GenerationRequest:
    data = {k: v for k, v in job.request.items() if k != "origin"}
    inputs = {name: files.load_input(job.id, name) for name in _INPUTS}
    return GenerationRequest.model_validate({**data, **{k: v for k, v in inputs.items() if v is not None}})


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class _Tracked:
    """A claimed job inside a batch: its engine hooks and the store it reports to."""

    job: Job
    member: BatchMember
    events: dict[str, threading.Event] = field(default_factory=dict)


class GenerationRunner:
    """Runs claimed generation jobs: one shared forward pass when they share a batch key, and
    each job's progress, previews, cancel, interrupt and skip wired to the store."""

    def __init__(self, engine: Engine, store: JobStore, files: JobFiles, events: JobEvents | None = None,
                 preview_every: int = 0):
        self.engine, self.store, self.files = engine, store, files
        self.report = JobReporter(store, events)
        self.preview_every = preview_every

    def run(self, jobs: list[Job]) -> None:
        tracked = [self._track(job) for job in jobs]
        try:
            results = self._generate([t.member for t in tracked])
        except Exception as error:  # one bad job must not fail the jobs batched with it: retry each alone
            if len(tracked) > 1:
                for t in tracked:
                    self.run([self.store.get(t.job.id) or t.job])
                return
            self.report.finish(tracked[0].job, JobState.failed, error=describe(error))
            return
        for t, result in zip(tracked, results):
            if result is None:
                self.report.finish(t.job, JobState.cancelled)
            else:
                self.report.finish(t.job, JobState.done, result=self._save(t.job, result))

    def _generate(self, members: list[BatchMember]) -> list[GenerationResult | None]:
        """A shared pass for txt2img jobs; img2img and inpaint (never batched) through the engine's
        single-request path."""
        if batch_key(members[0].request) is not None:
            return self.engine.generate_batch(members, preview_every=self.preview_every)
        (member,) = members
        try:
            return [self.engine.generate(member.request, member.progress, member.cancel, self.preview_every,
                                         interrupt=member.interrupt)]
        except GenerationCancelled:
            return [None]

    def _track(self, job: Job) -> _Tracked:
        hooks = {name: threading.Event() for name in ("cancel", "interrupt", "skip")}
        member = BatchMember(load_request(job, self.files), cancel=hooks["cancel"],
                             interrupt=hooks["interrupt"], skip=hooks["skip"])
        member.progress = lambda p: self._progress(job.id, p, hooks)
        return _Tracked(job, member, hooks)

    def _progress(self, job_id: str, progress: StepProgress, hooks: dict[str, threading.Event]) -> None:
        preview = _png(progress.preview[0]) if progress.preview else None
        total = progress.total * progress.batches
        self.store.progress(job_id, progress.batch * progress.total + progress.step, total, preview)
        job = self.store.get(job_id)
        if job is not None:
            if job.cancel_requested:
                hooks["cancel"].set()
            if job.interrupt_requested:
                hooks["interrupt"].set()
            if job.skip_requested:
                self.store.clear_skip(job_id)
                hooks["skip"].set()
        self.report.publish(job_id)

    def _save(self, job: Job, result: GenerationResult) -> dict:
        paths = self.engine.save(result, self.files.folder(job.id))
        return {"files": [p.name for p in paths], "seeds": result.seeds, "infotexts": result.infotexts,
                "interrupted": bool(result.extra.get("interrupted"))}

