"""The Text to image and Image to image / Inpaint tabs: one generation form (its controls
derived from ``GenerationRequest``), submitted to the job queue and followed live (progress
bar, step previews, results with their infotext), with cancel for this job only and
reconnection to a job still running when the page is reloaded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import gradio as gr
import numpy as np
from PIL import Image
from pydantic import ValidationError

from dreamloom.generate.lora_syntax import LoraWeight
from dreamloom.generate.request import GenerationRequest
from dreamloom.generate.samplers import SAMPLERS
from dreamloom.images import decode_image
from dreamloom.jobs.generation import KIND as GENERATE
from dreamloom.jobs.model import Job, JobState
from dreamloom.service.errors import InvalidField, NotFound, ServiceError
from dreamloom.service.principals import Principal
from dreamloom.service.studio import Studio
from dreamloom.ui import controls
from dreamloom.ui.progress import preview_image, progress_html
from dreamloom.ui.session import principal_of

NO_LORA = "None"


#: The shortest time between two updates of a running job's bar and preview (10 a second).
UPDATE_SECONDS = 0.1


def origin(tab: str) -> str:
    """The ``origin`` the page records on the jobs a tab submits (the APIs record theirs), so a
    reloaded page finds each tab's own unfinished job."""
    return f"ui:{tab}"

#: The size a picker shows for a model whose folder does not say (single files): SD 1.x's.
FALLBACK_SIZE = 512


def error_message(error: Exception) -> str:
    """One line naming the field and the problem, from pydantic or from the service."""
    if isinstance(error, ValidationError):
        return InvalidField.from_validation(error).message
    if isinstance(error, ServiceError):
        return error.message
    return str(error)


@dataclass
class GenerationForm:
    """The controls of one generation tab."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    model: gr.Dropdown
    sampler: gr.Dropdown
    steps: gr.Slider
    cfg_scale: gr.Slider
    width: gr.Slider
    height: gr.Slider
    seed: gr.Number
    batch_size: gr.Slider
    n_iter: gr.Slider
    clip_skip: gr.Slider
    lora: gr.Dropdown
    lora_weight: gr.Slider
    enhance: gr.Checkbox

    @property
    def fields(self) -> dict[str, gr.components.Component]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def request(self, data: dict, **extra) -> GenerationRequest:
        """The request the form's values (``data``, keyed by component) describe."""
        values = {name: data[component] for name, component in self.fields.items()}
        lora, weight = values.pop("lora"), values.pop("lora_weight")
        for name in ("steps", "width", "height", "seed", "batch_size", "n_iter", "clip_skip"):
            values[name] = int(values[name]) if values[name] is not None else None
        loras = [LoraWeight(name=lora, weight=weight)] if lora and lora != NO_LORA else []
        return GenerationRequest(**values, loras=loras, **extra)

    def restore(self, request: GenerationRequest) -> dict:
        """Updates that put ``request``'s parameters back into the form."""
        updates = {getattr(self, name): getattr(request, name) for name in
                   ("prompt", "negative_prompt", "sampler", "steps", "cfg_scale", "seed", "clip_skip")}
        updates[self.model] = gr.update(value=request.model)
        if request.width:
            updates[self.width] = request.width
        if request.height:
            updates[self.height] = request.height
        lora = request.loras[0] if request.loras else None
        updates[self.lora] = lora.name if lora else NO_LORA
        if lora:
            updates[self.lora_weight] = lora.weight
        return updates


def lora_names(studio: Studio) -> list[str]:
    return [NO_LORA, *(entry.name.removesuffix(".safetensors") for entry in studio.loras())]


def build_form(studio: Studio, prefix: str) -> tuple[GenerationForm, gr.Button]:
    """Prompt boxes on top, parameters below, as AUTOMATIC1111 lays them out; also returns
    the recycle-seed button, wired once the job view exists."""
    limits = studio.config.limits
    R = GenerationRequest
    default_model = studio.preferences.server.model
    size = studio.native_size(default_model) or FALLBACK_SIZE
    prompt = controls.textbox(R, "prompt", "Prompt", lines=3, elem_id=f"{prefix}-prompt",
                              placeholder="a large red circle left of a small blue square on a yellow background")
    negative = controls.textbox(R, "negative_prompt", "Negative prompt", lines=2, elem_id=f"{prefix}-negative")
    with gr.Row():
        model = controls.choices(R, "model", "Model", studio.model_names(), value=default_model,
                                 elem_id=f"{prefix}-model")
        sampler = controls.choices(R, "sampler", "Sampler", list(SAMPLERS), elem_id=f"{prefix}-sampler")
    with gr.Row():
        steps = controls.slider(R, "steps", "Steps", limit=limits.max_steps, elem_id=f"{prefix}-steps")
        cfg = controls.slider(R, "cfg_scale", "CFG scale", step=0.5, elem_id=f"{prefix}-cfg")
    with gr.Row():
        width = controls.slider(R, "width", "Width", step=8, limit=limits.max_width, value=size, minimum=8,
                                elem_id=f"{prefix}-width")
        height = controls.slider(R, "height", "Height", step=8, limit=limits.max_height, value=size, minimum=8,
                                 elem_id=f"{prefix}-height")
    with gr.Row():
        seed = controls.number(R, "seed", "Seed", elem_id=f"{prefix}-seed", scale=4)
        dice = gr.Button("Random", elem_id=f"{prefix}-dice", scale=0, min_width=80)
        recycle = gr.Button("Reuse", elem_id=f"{prefix}-recycle", scale=0, min_width=80)
    with gr.Row():
        batch_size = controls.slider(R, "batch_size", "Batch size", limit=limits.max_batch_size,
                                     elem_id=f"{prefix}-batch-size")
        n_iter = controls.slider(R, "n_iter", "Batch count", limit=limits.max_n_iter, elem_id=f"{prefix}-n-iter")
    with gr.Row():
        lora = gr.Dropdown(lora_names(studio), value=NO_LORA, label="LoRA", elem_id=f"{prefix}-lora",
                           info=controls.help_text(LoraWeight, "name"))
        lora_weight = controls.slider(LoraWeight, "weight", "LoRA weight", step=0.05, elem_id=f"{prefix}-lora-weight")
    with gr.Row():
        clip_skip = controls.slider(R, "clip_skip", "Clip skip", elem_id=f"{prefix}-clip-skip")
        enhance = controls.checkbox(R, "enhance", "Enhance prompt", elem_id=f"{prefix}-enhance")
    dice.click(lambda: -1, outputs=seed, queue=False)
    return GenerationForm(prompt, negative, model, sampler, steps, cfg, width, height, seed, batch_size, n_iter,
                          clip_skip, lora, lora_weight, enhance), recycle


@dataclass
class JobView:
    """What a running generation job shows: its id (to cancel it), the bar, the newest preview,
    and at the end the images, their infotext and the first seed (for the recycle button)."""

    job_id: gr.State
    progress: gr.HTML
    preview: gr.Image
    gallery: gr.Gallery
    info: gr.Textbox
    last_seed: gr.State

    @property
    def outputs(self) -> list:
        return [self.job_id, self.progress, self.preview, self.gallery, self.info, self.last_seed]


def build_job_view(prefix: str) -> tuple[gr.Button, gr.Button, JobView]:
    """Generate and Cancel above the job's bar, preview, images and parameters."""
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        cancel = gr.Button("Cancel", elem_id=f"{prefix}-cancel")
    job_id = gr.State("")
    progress = gr.HTML(progress_html(None), elem_id=f"{prefix}-progress")
    preview = gr.Image(label="Preview", interactive=False, visible=True, height=160, elem_id=f"{prefix}-preview",
                       type="pil")
    gallery = gr.Gallery(label="Images", columns=4, height="auto", elem_id=f"{prefix}-gallery", format="png",
                         interactive=False)
    info = gr.Textbox(label="Generation parameters", lines=3, interactive=False, elem_id=f"{prefix}-info")
    return generate, cancel, JobView(job_id, progress, preview, gallery, info, gr.State(-1))


def output_images(studio: Studio, principal: Principal, job: Job) -> list[Image.Image]:
    """The job's images, read through the service (the page serves no job folder by path), with
    their infotexts: Gradio keeps a PNG's text chunks when it caches the image."""
    return [decode_image(path.read_bytes(), path.name) for path in studio.outputs(principal, job)]


async def follow(studio: Studio, principal: Principal, view: JobView, job_id: str) -> AsyncIterator[dict]:
    """The job's changes as updates of ``view`` until it finishes, at most one running update per
    ``UPDATE_SECONDS``: a fast model finishes a step every few milliseconds, and redrawing the
    page for each costs the browser more CPU than the person gains (``bench/ui.py``)."""
    shown = 0.0
    async for job in studio.changes(principal, job_id):
        now = time.monotonic()
        if job.state == JobState.running and now - shown < UPDATE_SECONDS:
            continue
        shown = now
        update = {view.job_id: job.id, view.progress: progress_html(job)}
        if job.state == JobState.running and (
                preview := preview_image(studio.preview(principal, job.id))) is not None:
            update[view.preview] = preview
        if job.state.finished:
            infotexts = job.result.get("infotexts") or [""]
            update[view.gallery] = output_images(studio, principal, job)
            update[view.info] = infotexts[0] if job.state == JobState.done else (job.error or job.state.value)
            if job.result.get("seeds"):
                update[view.last_seed] = job.result["seeds"][0]
        yield update


def unfinished_job(studio: Studio, principal: Principal, kind: str, tab: str) -> str | None:
    """The caller's newest running (else queued) job of ``kind`` that ``tab`` submitted, for a
    reloaded page to follow again."""
    for state in (JobState.running, JobState.queued):
        for job in studio.jobs(principal, state, kind=kind, limit=20):
            if job.request.get("origin") == origin(tab):
                return job.id
    return None


def mask_of(editor: dict | None) -> tuple[Image.Image | None, Image.Image | None]:
    """The init image and the painted mask (white where any layer was painted; None when
    nothing was) from an ``ImageEditor`` value."""
    if not editor or editor.get("background") is None:
        return None, None
    background = editor["background"].convert("RGB")
    painted = np.zeros((background.height, background.width), dtype=bool)
    for layer in editor.get("layers") or []:
        alpha = np.asarray(layer.convert("RGBA").resize(background.size))[..., 3]
        painted |= alpha > 0
    mask = Image.fromarray((painted * 255).astype(np.uint8), "L") if painted.any() else None
    return background, mask


def wire_cancel(studio: Studio, cancel: gr.Button, job_id: gr.State) -> None:
    """Cancel stops the job this page follows (its id lives in the session, on the server), if it
    is the caller's, and no other."""

    def stop(job: str, request: gr.Request) -> str:
        if job:
            try:
                studio.cancel(principal_of(studio, request), job)
            except NotFound as error:
                raise gr.Error(error.message) from None
        return job

    cancel.click(stop, inputs=job_id, outputs=job_id, queue=False)


def wire_generation(studio: Studio, tab: str, form: GenerationForm, recycle: gr.Button, view: JobView,
                    generate: gr.Button, cancel: gr.Button, editor: gr.ImageEditor | None = None,
                    strength: gr.Slider | None = None, mask_blur: gr.Slider | None = None):
    """Generate submits a job and follows it; cancel stops that job only; recycle puts the
    last seed back. Returns the handler that follows this tab's unfinished job again, for the
    page's load event (a reloaded page reconnects)."""
    inputs = set(form.fields.values()) | {c for c in (editor, strength, mask_blur) if c is not None}

    async def run(data: dict, request: gr.Request) -> AsyncIterator[dict]:
        extra = {}
        if editor is not None:
            image, mask = mask_of(data[editor])
            if image is None:
                raise gr.Error("Upload or drop an image first.")
            extra = {"init_image": image, "mask": mask, "denoising_strength": data[strength],
                     "mask_blur": int(data[mask_blur])}
        principal = principal_of(studio, request)
        try:
            job = studio.submit(principal, form.request(data, **extra), origin=origin(tab))
        except (ValidationError, ServiceError, ValueError) as error:
            raise gr.Error(error_message(error)) from None
        yield {view.gallery: [], view.info: "", view.preview: None}  # the last job's results go
        async for update in follow(studio, principal, view, job.id):
            yield update

    async def reconnect(request: gr.Request) -> AsyncIterator[dict]:
        principal = principal_of(studio, request)
        job_id = unfinished_job(studio, principal, GENERATE, tab)
        if job_id is None:
            yield {view.job_id: ""}  # one update: a generator that yields nothing would clear the outputs
            return
        async for update in follow(studio, principal, view, job_id):
            yield update

    generate.click(run, inputs=inputs, outputs=view.outputs, concurrency_limit=None)
    wire_cancel(studio, cancel, view.job_id)
    recycle.click(lambda seed: seed, inputs=view.last_seed, outputs=form.seed, queue=False)
    return reconnect
