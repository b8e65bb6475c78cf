"""The Text to image and Image to image / Inpaint tabs: one generation form (its controls
derived from ``GenerationRequest``), submitted to the job queue and followed live (progress
bar, step previews, results with their infotext), with cancel for this job only and
reconnection to a job still running when the page is reloaded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import gradio as gr
import numpy as np
from fastapi import HTTPException
from PIL import Image
from pydantic import ValidationError

from dreamloom.generate.lora_syntax import LoraWeight
from dreamloom.generate.request import GenerationRequest
from dreamloom.generate.samplers import SAMPLERS
from dreamloom.jobs.generation import KIND as GENERATE
from dreamloom.jobs.model import Job, JobState
from dreamloom.server.studio import Studio
from dreamloom.ui import controls
from dreamloom.ui.progress import preview_image, progress_html, shown_job_js
from dreamloom.ui.session import owner_of

NO_LORA = "None"
#: The ``origin`` of the jobs the page submits (the APIs record theirs).
ORIGIN = "ui"
#: The size a picker shows for a model whose folder does not say (single files): SD 1.x's.
FALLBACK_SIZE = 512


def error_message(error: Exception) -> str:
    """One line naming the field and the problem, from pydantic or from a server check."""
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "request"
        return f"{where}: {first['msg'].removeprefix('Value error, ')}"
    if isinstance(error, HTTPException):
        detail = error.detail
        if isinstance(detail, list) and detail:
            return f"{detail[0]['loc'][-1]}: {detail[0]['msg']}"
        return str(detail)
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
    return [NO_LORA, *(entry.name.removesuffix(".safetensors") for entry in studio.engine.models.registry.loras())]


def native_size(studio: Studio, model: str) -> int:
    try:
        entry = studio.engine.models.registry.resolve(model)
    except ValueError:
        return FALLBACK_SIZE
    return entry.native_size() or FALLBACK_SIZE


def build_form(studio: Studio, prefix: str) -> tuple[GenerationForm, gr.Button]:
    """Prompt boxes on top, parameters below, as AUTOMATIC1111 lays them out; also returns
    the recycle-seed button, wired once the job view exists."""
    limits = studio.config.limits
    R = GenerationRequest
    size = native_size(studio, studio.default_model)
    prompt = controls.textbox(R, "prompt", "Prompt", lines=3, elem_id=f"{prefix}-prompt",
                              placeholder="a large red circle left of a small blue square on a yellow background")
    negative = controls.textbox(R, "negative_prompt", "Negative prompt", lines=2, elem_id=f"{prefix}-negative")
    with gr.Row():
        model = controls.choices(R, "model", "Model", studio.model_names(), value=studio.default_model,
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
    clip_skip = controls.slider(R, "clip_skip", "Clip skip", elem_id=f"{prefix}-clip-skip")
    dice.click(lambda: -1, outputs=seed, queue=False)
    return GenerationForm(prompt, negative, model, sampler, steps, cfg, width, height, seed, batch_size, n_iter,
                          clip_skip, lora, lora_weight), recycle


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


async def follow(studio: Studio, view: JobView, job_id: str) -> AsyncIterator[dict]:
    """The job's changes as updates of ``view`` until it finishes."""
    async for job in studio.changes(job_id):
        update = {view.job_id: job.id, view.progress: progress_html(job)}
        if job.state == JobState.running and (preview := preview_image(studio.store.preview(job.id))) is not None:
            update[view.preview] = preview
        if job.state.finished:
            paths = [str(p) for p in studio.output_paths(job)]
            infotexts = job.result.get("infotexts") or [""]
            update[view.gallery] = paths
            update[view.info] = infotexts[0] if job.state == JobState.done else (job.error or job.state.value)
            if job.result.get("seeds"):
                update[view.last_seed] = job.result["seeds"][0]
        yield update


def unfinished_job(studio: Studio, owner: str, kind: str, belongs: Callable[[Job], bool] = lambda job: True
                   ) -> str | None:
    """The caller's newest running (else queued) job of ``kind`` submitted from the page that
    ``belongs`` to a tab, for a reloaded page to follow again."""
    for state in (JobState.running, JobState.queued):
        for job in studio.store.jobs(state=state, owner=owner or None, limit=20):
            if job.kind == kind and job.request.get("origin") == ORIGIN and belongs(job):
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


def wire_cancel(studio: Studio, cancel: gr.Button, job_id: gr.State, progress: gr.HTML) -> None:
    """Cancel stops the job the bar shows, and no other."""

    def stop(job: str) -> str:
        if job and studio.store.get(job) is not None:
            studio.store.request_cancel(job)
            studio.events.publish(job)
        return job

    cancel.click(stop, inputs=job_id, outputs=job_id, queue=False, js=shown_job_js(progress.elem_id))


def wire_generation(studio: Studio, form: GenerationForm, recycle: gr.Button, view: JobView, generate: gr.Button,
                    cancel: gr.Button, editor: gr.ImageEditor | None = None,
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
        try:
            job = studio.submit(form.request(data, **extra), owner_of(request), origin=ORIGIN)
        except (ValidationError, HTTPException, ValueError) as error:
            raise gr.Error(error_message(error)) from None
        yield {view.gallery: [], view.info: "", view.preview: None}  # the last job's results go
        async for update in follow(studio, view, job.id):
            yield update

    async def reconnect(request: gr.Request) -> AsyncIterator[dict]:
        with_image = editor is not None  # this tab's jobs: txt2img, or with an init image
        job_id = unfinished_job(studio, owner_of(request), GENERATE, lambda job: with_image == (
            studio.files.folder(job.id) / "inputs" / "init_image.png").exists())
        if job_id is None:
            yield {view.job_id: ""}  # one update: a generator that yields nothing would clear the outputs
            return
        async for update in follow(studio, view, job_id):
            yield update

    generate.click(run, inputs=inputs, outputs=view.outputs, concurrency_limit=None)
    wire_cancel(studio, cancel, view.job_id, view.progress)
    recycle.click(lambda seed: seed, inputs=view.last_seed, outputs=form.seed, queue=False)
    return reconnect
