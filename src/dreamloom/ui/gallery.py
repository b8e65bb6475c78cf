"""Gallery & history: every finished generation job's images with their parameters. Clicking
one, or dropping any PNG that carries an infotext (dreamloom's, AUTOMATIC1111's, SD.Next's),
puts its parameters back into the Text to image form."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from pydantic import ValidationError

from PIL import Image

from dreamloom.generate.infotext import read_infotext, request_from_infotext
from dreamloom.jobs.generation import KIND as GENERATE
from dreamloom.jobs.model import JobState
from dreamloom.service.principals import Principal
from dreamloom.service.studio import Studio
from dreamloom.ui.generation import GenerationForm, error_message, output_images
from dreamloom.ui.session import principal_of

#: Jobs the gallery reaches back to, newest first.
HISTORY_JOBS = 200


def history(studio: Studio, principal: Principal) -> list[tuple[Image.Image, str]]:
    """(image, first line of its prompt) for the caller's finished images, newest first; each
    image keeps its infotext, so a click restores from the copy the page holds."""
    items = []
    for job in studio.jobs(principal, JobState.done, kind=GENERATE, limit=HISTORY_JOBS):
        for image, infotext in zip(output_images(studio, principal, job), job.result.get("infotexts", [])):
            items.append((image, infotext.split("\n")[0][:80]))
    return items


@dataclass
class GalleryTab:
    gallery: gr.Gallery
    selected: gr.State
    info: gr.Textbox
    refresh: gr.Button
    send_to_img2img: gr.Button


def build_gallery_tab() -> GalleryTab:
    with gr.Row():
        refresh = gr.Button("Refresh", elem_id="history-refresh", scale=0)
        send = gr.Button("Send to img2img / inpaint", elem_id="history-send", scale=0)
    gallery = gr.Gallery(label="History", columns=6, height="auto", elem_id="history-gallery", format="png",
                         interactive=False, allow_preview=False)
    info = gr.Textbox(label="Parameters of the selected image", lines=3, interactive=False, elem_id="history-info")
    return GalleryTab(gallery, gr.State(""), info, refresh, send)


def restore_from(path: str, form: GenerationForm) -> dict:
    """The form updates that reproduce the image at ``path``, and its infotext; a warning (and
    no change) for a PNG without readable parameters."""
    try:
        text = read_infotext(Path(path))
        request = request_from_infotext(text)
    except (ValueError, OSError, ValidationError) as error:
        gr.Warning(f"No generation parameters: {error_message(error)}")
        return {}
    return {**form.restore(request), "infotext": text}


def wire_gallery(studio: Studio, tab: GalleryTab, form: GenerationForm, png_drop: gr.File, png_info: gr.Textbox):
    """Clicking an image restores its parameters; a dropped PNG does too. Returns the refresh
    handler for the page's load event and the tab's select event."""

    def load(request: gr.Request) -> dict:
        return {tab.gallery: history(studio, principal_of(studio, request))}

    def pick(event: gr.SelectData) -> dict:
        value = event.value
        path = value["image"]["path"] if isinstance(value, dict) and value.get("image") else ""
        updates = restore_from(path, form)
        return {**{k: v for k, v in updates.items() if k != "infotext"},
                tab.info: updates.get("infotext", ""), tab.selected: path}

    def dropped(file: str | None) -> dict:
        if not file:
            return {}
        updates = restore_from(file, form)
        return {**{k: v for k, v in updates.items() if k != "infotext"}, png_info: updates.get("infotext", "")}

    outputs_form = list(form.fields.values())
    tab.refresh.click(load, outputs=tab.gallery)
    tab.gallery.select(pick, outputs=[*outputs_form, tab.info, tab.selected])
    png_drop.upload(dropped, inputs=png_drop, outputs=[*outputs_form, png_info])
    return load
