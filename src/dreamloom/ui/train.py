"""The Train tab: a DreamBooth form (controls from ``TrainingRequest``) that queues a training
job and follows it: step bar, live loss chart, the newest sample grid, and at the end the
new LoRA (or model) in every picker."""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image
from pydantic import ValidationError

from dreamloom.images import decode_image
from dreamloom.jobs.model import JobState
from dreamloom.jobs.training import KIND as TRAIN
from dreamloom.service.errors import ServiceError
from dreamloom.service.principals import Principal
from dreamloom.service.studio import Studio
from dreamloom.train.dreambooth.request import DEFAULT_RATES, TrainingRequest
from dreamloom.ui import controls
from dreamloom.ui.generation import error_message, origin, unfinished_job, wire_cancel
from dreamloom.ui.progress import progress_html
from dreamloom.ui.session import principal_of

TAB = "train"


@dataclass
class TrainForm:
    images: gr.File
    name: gr.Textbox
    base_model: gr.Dropdown
    instance_prompt: gr.Textbox
    class_prompt: gr.Textbox
    method: gr.Radio
    steps: gr.Slider
    learning_rate: gr.Number
    prior_preservation: gr.Checkbox
    num_class_images: gr.Slider
    rank: gr.Slider
    train_text_encoder: gr.Checkbox
    validation_prompt: gr.Textbox

    @property
    def fields(self) -> dict[str, gr.components.Component]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "images"}

    def request(self, data: dict) -> TrainingRequest:
        values = {name: data[component] for name, component in self.fields.items()}
        for name in ("steps", "num_class_images", "rank"):
            values[name] = int(values[name])
        values["learning_rate"] = values["learning_rate"] or None
        return TrainingRequest(**values)


@dataclass
class TrainView:
    job_id: gr.State
    progress: gr.HTML
    loss: gr.Image
    samples: gr.Image
    result: gr.Markdown

    @property
    def outputs(self) -> list:
        return [self.job_id, self.progress, self.loss, self.samples, self.result]


def build_train_tab(studio: Studio) -> tuple[TrainForm, TrainView, gr.Button, gr.Button]:
    T = TrainingRequest
    with gr.Row():
        with gr.Column():
            images = gr.File(label="Subject images (3-5 of the same subject)", file_count="multiple",
                             file_types=["image"], elem_id="train-images")
            name = controls.textbox(T, "name", "Name", elem_id="train-name", placeholder="my-star")
            base = controls.choices(T, "base_model", "Base model", studio.model_names(), elem_id="train-base")
            instance = controls.textbox(T, "instance_prompt", "Instance prompt", elem_id="train-instance",
                                        placeholder="a sks star")
            klass = controls.textbox(T, "class_prompt", "Class prompt", elem_id="train-class", placeholder="a star")
            method = gr.Radio(list(typing.get_args(T.model_fields["method"].annotation)),
                              value=controls.default(T, "method"), label="Method",
                              info=controls.help_text(T, "method"), elem_id="train-method")
            steps = controls.slider(T, "steps", "Steps", elem_id="train-steps")
            rate = gr.Number(DEFAULT_RATES[controls.default(T, "method")], label="Learning rate", info=controls.help_text(T, "learning_rate"),
                             minimum=0, maximum=controls.bounds(T, "learning_rate")[1], elem_id="train-rate")
            prior = controls.checkbox(T, "prior_preservation", "Prior preservation", elem_id="train-prior")
            classes = controls.slider(T, "num_class_images", "Class images", elem_id="train-class-images")
            rank = controls.slider(T, "rank", "LoRA rank", elem_id="train-rank")
            text_encoder = controls.checkbox(T, "train_text_encoder", "Train the text encoder", elem_id="train-te")
            validation = controls.textbox(T, "validation_prompt", "Sample prompt", elem_id="train-validation")
            with gr.Row():
                start = gr.Button("Train", variant="primary", elem_id="train-start")
                cancel = gr.Button("Cancel", elem_id="train-cancel")
        with gr.Column():
            progress = gr.HTML(progress_html(None), elem_id="train-progress")
            loss = gr.Image(label="Loss", interactive=False, elem_id="train-loss", type="pil")
            samples = gr.Image(label="Newest sample grid", interactive=False, elem_id="train-samples",
                               type="pil", height=240)
            result = gr.Markdown(elem_id="train-result")
    method.change(lambda chosen: DEFAULT_RATES[chosen], inputs=method, outputs=rate, queue=False)
    form = TrainForm(images, name, base, instance, klass, method, steps, rate, prior, classes, rank, text_encoder,
                     validation)
    return form, TrainView(gr.State(""), progress, loss, samples, result), start, cancel


def _images(studio: Studio, files: list | None) -> list[Image.Image]:
    """The uploaded files as images, each decoded under the server's pixel cap."""
    images = []
    for i, file in enumerate(files or []):
        path = getattr(file, "name", file)
        with open(path, "rb") as handle:
            images.append(studio.policy.image(handle.read(), ("images", i)).convert("RGB"))
    return images


def _open(path: Path | None) -> Image.Image | None:
    return decode_image(path.read_bytes(), path.name) if path is not None else None


def wire_training(studio: Studio, form: TrainForm, view: TrainView, start: gr.Button, cancel: gr.Button):
    """Train queues the job and follows it; cancel stops it. Returns the train event (the page
    refreshes its pickers after it) and the reconnect handler."""

    async def follow(principal: Principal, job_id: str) -> AsyncIterator[dict]:
        shown: tuple = (None, None)
        async for job in studio.changes(principal, job_id):
            update = {view.job_id: job.id, view.progress: progress_html(job)}
            loss, grids = studio.training_files(principal, job.id)
            files = (loss and loss.stat().st_mtime, grids[-1] if grids else None)
            if files != shown:
                shown = files
                update[view.loss] = _open(loss)
                update[view.samples] = _open(grids[-1] if grids else None)
            if job.state == JobState.done:
                kind = "LoRA" if job.result.get("method") == "lora" else "model"
                name = job.result.get("installed")
                use = f" Use it from the LoRA picker or as `<lora:{name}:1>` in a prompt." if kind == "LoRA" else ""
                update[view.result] = f"**{kind} `{name}` is ready** ({job.result.get('minutes')} min).{use}"
            elif job.state.finished:
                update[view.result] = f"**{job.state.value.capitalize()}**. {job.error or ''}"
            yield update

    async def run(data: dict, request: gr.Request) -> AsyncIterator[dict]:
        principal = principal_of(studio, request)
        try:
            job = studio.submit_training(principal, form.request(data), _images(studio, data[form.images]),
                                         origin(TAB))
        except (ValidationError, ServiceError, ValueError) as error:
            raise gr.Error(error_message(error)) from None
        async for update in follow(principal, job.id):
            yield update

    async def reconnect(request: gr.Request) -> AsyncIterator[dict]:
        principal = principal_of(studio, request)
        job_id = unfinished_job(studio, principal, TRAIN, TAB)
        if job_id is None:
            yield {view.job_id: ""}  # one update: a generator that yields nothing would clear the outputs
            return
        async for update in follow(principal, job_id):
            yield update

    event = start.click(run, inputs={form.images, *form.fields.values()}, outputs=view.outputs,
                        concurrency_limit=None)
    wire_cancel(studio, cancel, view.job_id)
    return event, reconnect
