"""Generation as jobs: submitting a request (seed fixed at once, inputs stored beside it) and
running claimed jobs through the engine together, each image what its job alone would draw."""

from __future__ import annotations

import json
from pathlib import Path


from dreamloom.generate.batched import BatchMember, batch_key
from dreamloom.generate.engine import Engine
from dreamloom.generate.infotext import png_bytes
from dreamloom.generate.progress import GenerationCancelled, StepProgress
from dreamloom.generate.request import GenerationRequest, GenerationResult
from dreamloom.generate.seeds import resolve_seed
from dreamloom.jobs.lease import Claim
from dreamloom.jobs.model import Job, JobState, describe
from dreamloom.jobs.store import JobStore

KIND = "generate"
_INPUTS = ("init_image", "mask")


def submit_generation(store: JobStore, request: GenerationRequest, owner: str = "", max_queued: int | None = None,
                      origin: str = "api", max_owner_queued: int | None = None) -> Job:
    """Queue ``request`` as a job, its init image and mask stored with it. A random seed (-1)
    is drawn now and stored, so a job that restarts after a crash draws the same images.
    ``origin`` records which API submitted it."""
    request = request.model_copy(update={"seed": resolve_seed(request.seed)})
    inputs = {name: getattr(request, name) for name in _INPUTS if getattr(request, name) is not None}
    key = batch_key(request)
    data = {**request.model_dump(mode="json"), "origin": origin}
    return store.submit(KIND, data, owner=owner, batch_key=None if key is None else json.dumps(key, default=str),
                        images=request.batch_size, max_queued=max_queued, inputs=inputs,
                        max_owner_queued=max_owner_queued)


def load_request(job: Job, store: JobStore) -> GenerationRequest:
    data = {k: v for k, v in job.request.items() if k != "origin"}
    inputs = {name: store.blobs.load_input(job.id, name) for name in _INPUTS}
    return GenerationRequest.model_validate({**data, **{k: v for k, v in inputs.items() if v is not None}})


class GenerationRunner:
    """Runs claimed generation jobs: one shared forward pass when they share a batch key, and
    each job's progress, previews, cancel, interrupt and skip wired to its claim."""

    def __init__(self, engine: Engine, store: JobStore, preview_every: int = 0):
        self.engine, self.store = engine, store
        self.preview_every = preview_every

    def run(self, claims: list[Claim]) -> None:
        members = [self._member(claim) for claim in claims]
        try:
            results = self._generate(members)
        except Exception as error:  # one bad job must not fail the jobs batched with it: retry each alone
            if len(claims) > 1:
                for claim in claims:
                    self.run([claim])
                return
            claims[0].finish(JobState.failed, error=describe(error))
            return
        for claim, result in zip(claims, results):
            if result is None:
                claim.finish(JobState.cancelled)
            else:
                claim.finish(JobState.done, result=self._save(claim.job, result))

    def _generate(self, members: list[BatchMember]) -> list[GenerationResult | None]:
        """A shared pass for txt2img jobs; img2img and inpaint (never batched) through the engine's
        single-request path."""
        if batch_key(members[0].request) is not None:
            return self.engine.generate_batch(members, preview_every=self.preview_every)
        (member,) = members
        try:
            return [self.engine.generate(member.request, member.progress, member.cancel, self.preview_every,
                                         interrupt=member.interrupt, skip=member.skip)]
        except GenerationCancelled:
            return [None]

    def _member(self, claim: Claim) -> BatchMember:
        def progress(step: StepProgress) -> None:
            preview = png_bytes(step.preview[0]) if step.preview else None
            claim.progress(step.batch * step.total + step.step, step.total * step.batches, preview)

        return BatchMember(load_request(claim.job, self.store), progress=progress, cancel=claim.cancel,
                           interrupt=claim.interrupt, skip=claim.skip)

    def _save(self, job: Job, result: GenerationResult) -> dict:
        names = [f"{index:05d}-{seed}.png" for index, seed in enumerate(result.seeds)]
        for name, data in zip(names, self.engine.encode(result, [Path(name) for name in names])):
            self.store.blobs.put_output(job.id, name, data)
        return {"files": names, "seeds": result.seeds, "infotexts": result.infotexts,
                "interrupted": bool(result.extra.get("interrupted"))}
