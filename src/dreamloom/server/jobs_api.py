"""dreamloom's own job API: submit returns an id at once; poll, stream, cancel, list, download."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import ConfigDict, Field

from dreamloom.generate.request import GenerationRequest
from dreamloom.jobs.model import Job, JobState
from dreamloom.server.auth import Caller, StudioDep
from dreamloom.service.policy import RequestPolicy
from dreamloom.train.dreambooth.request import TrainingRequest

router = APIRouter(prefix="/api/v1", tags=["jobs"])


class JobRequest(GenerationRequest):
    """A generation request as JSON: images as base64 PNG (a ``data:`` prefix is accepted)."""

    model_config = ConfigDict(extra="forbid")

    init_image: str | None = Field(None, description="img2img/inpaint: the starting image, base64.")
    mask: str | None = Field(None, description="inpaint: white where to redraw, base64.")

    def to_request(self, policy: RequestPolicy) -> GenerationRequest:
        images = {name: policy.image(value, name) for name in ("init_image", "mask")
                  if (value := getattr(self, name)) is not None}
        return GenerationRequest.model_validate({**self.model_dump(exclude={"init_image", "mask"}), **images})


class TrainJobRequest(TrainingRequest):
    """A DreamBooth run as JSON: the subject's images as base64 (a ``data:`` prefix is accepted)."""

    images: list[str] = Field(..., min_length=1, max_length=32, description="3-5 images of the subject, base64.")

    def to_request(self, policy: RequestPolicy) -> tuple[TrainingRequest, list]:
        images = [policy.image(value, ("images", i)) for i, value in enumerate(self.images)]
        return TrainingRequest.model_validate(self.model_dump(exclude={"images"})), images


def _view(job: Job, request: Request) -> dict:
    view = job.public()
    base = str(request.url_for("job_file", job_id=job.id, name="_")).removesuffix("_")
    view["result"] = {**job.result, "urls": [base + name for name in job.result.get("files", [])]}
    return view


@router.post("/jobs", status_code=202, summary="Queue a generation job; returns its id at once")
def submit_job(body: JobRequest, request: Request, principal: Caller, studio: StudioDep) -> dict:
    generation = studio.with_preferences(principal, body.to_request(studio.policy), body.model_fields_set)
    job = studio.submit(principal, generation, origin="api")
    return _view(studio.job(principal, job.id), request)


@router.post("/train", status_code=202, summary="Queue a DreamBooth training job; returns its id at once")
def submit_train(body: TrainJobRequest, request: Request, principal: Caller, studio: StudioDep) -> dict:
    """The trained LoRA (or model) lands in the models folder under ``name`` when the job is done."""
    training, images = body.to_request(studio.policy)
    job = studio.submit_training(principal, training, images, origin="api")
    return _view(studio.job(principal, job.id), request)


@router.get("/jobs", summary="The caller's jobs, newest first")
def list_jobs(request: Request, principal: Caller, studio: StudioDep, state: JobState | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    jobs = studio.jobs(principal, state=state, limit=limit)
    return {"jobs": [_view(job, request) for job in jobs], "counts": studio.counts(principal)}


@router.get("/jobs/{job_id}", summary="One job: state, progress, result")
def get_job(job_id: str, request: Request, principal: Caller, studio: StudioDep) -> dict:
    return _view(studio.job(principal, job_id), request)


@router.delete("/jobs/{job_id}", summary="Cancel this job (and no other)")
def cancel_job(job_id: str, request: Request, principal: Caller, studio: StudioDep) -> dict:
    return _view(studio.cancel(principal, job_id), request)


@router.post("/jobs/{job_id}/interrupt", summary="Stop this running job now, keeping the images drawn so far")
def interrupt_job(job_id: str, request: Request, principal: Caller, studio: StudioDep) -> dict:
    studio.interrupt(principal, job_id)
    return _view(studio.job(principal, job_id), request)


@router.post("/jobs/{job_id}/skip", summary="Drop this running job's current batch and go on with the next")
def skip_job(job_id: str, request: Request, principal: Caller, studio: StudioDep) -> dict:
    studio.interrupt(principal, job_id, skip=True)
    return _view(studio.job(principal, job_id), request)


@router.get("/jobs/{job_id}/preview", summary="The newest preview of a running job (PNG)",
            responses={200: {"content": {"image/png": {}}}, 204: {"description": "no preview yet"}})
def job_preview(job_id: str, principal: Caller, studio: StudioDep) -> Response:
    preview = studio.preview(principal, job_id)
    return Response(preview, media_type="image/png") if preview else Response(status_code=204)


@router.get("/jobs/{job_id}/files/{name}", name="job_file", summary="Download one output file",
            response_class=FileResponse)
def job_file(job_id: str, name: str, principal: Caller, studio: StudioDep) -> FileResponse:
    return FileResponse(studio.output(principal, job_id, name), media_type="image/png")


@router.get("/jobs/{job_id}/events", summary="Server-sent events: progress, previews, done",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, request: Request, principal: Caller, studio: StudioDep) -> StreamingResponse:
    studio.job(principal, job_id)

    async def stream():
        last = None
        async for job in studio.changes(principal, job_id, request.is_disconnected):
            view = _view(job, request)
            if job.state.finished:
                yield f"event: {job.state.value}\ndata: {json.dumps(view)}\n\n"
                return
            marker = (job.state, job.step)
            if marker != last:
                last = marker
                if job.state == JobState.running:
                    view["preview_url"] = str(request.url_for("job_preview", job_id=job.id))
                yield f"event: progress\ndata: {json.dumps(view)}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
