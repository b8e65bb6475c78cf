"""The web UI: one Gradio page with a tab for each thing dreamloom does, served by
``dreamloom serve`` at ``/`` beside the APIs and over the same service (``Studio``), so the
page, the APIs and the CLI see one job queue and one set of rules about who sees what."""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI

from dreamloom.generate.request import GenerationRequest
from dreamloom.service.studio import Studio
from dreamloom.ui import controls
from dreamloom.ui.gallery import build_gallery_tab, wire_gallery
from dreamloom.ui.generation import build_form, build_job_view, lora_names, wire_generation
from dreamloom.ui.login import install_login
from dreamloom.ui.progress import CSS
from dreamloom.ui.settings import build_settings_tab, model_rows
from dreamloom.ui.train import build_train_tab, wire_training
from dreamloom.ui.understand import build_understand_tab

#: System fonts only: the page must render the same with no internet.
THEME = gr.themes.Default(font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])


def _editor_value(path: str) -> dict:
    return {"background": path, "layers": [], "composite": path}


def _first_image(gallery: list | None, selected: str) -> str | None:
    """The image to send on: the one clicked in ``gallery``, else its first."""
    if selected:
        return selected
    if not gallery:
        return None
    first = gallery[0]
    return first[0] if isinstance(first, (list, tuple)) else first


def build_ui(studio: Studio) -> gr.Blocks:
    R = GenerationRequest
    # Gradio copies every image it shows into its cache: checked hourly, files older than a day go
    with gr.Blocks(title="dreamloom", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Text to image", id="txt2img", elem_id="tab-txt2img"), gr.Row():
                with gr.Column():
                    t_form, t_recycle = build_form(studio, "txt2img")
                with gr.Column():
                    t_generate, t_cancel, t_view = build_job_view("txt2img")
                    t_selected = gr.State("")
                    t_send = gr.Button("Send to img2img / inpaint", elem_id="txt2img-send")
            with gr.Tab("Image to image / Inpaint", id="img2img", elem_id="tab-img2img"), gr.Row():
                with gr.Column():
                    editor = gr.ImageEditor(
                        label="Image: paint over what to redraw (no paint: img2img)", type="pil",
                        elem_id="img2img-editor", sources=["upload", "clipboard"], transforms=(),
                        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=12),
                        layers=False, height=420)
                    strength = controls.slider(R, "denoising_strength", "Denoising strength", step=0.05,
                                               elem_id="img2img-strength")
                    blur = controls.slider(R, "mask_blur", "Mask blur", elem_id="img2img-mask-blur")
                    i_form, i_recycle = build_form(studio, "img2img")
                with gr.Column():
                    i_generate, i_cancel, i_view = build_job_view("img2img")
            with gr.Tab("Gallery & history", id="history", elem_id="tab-history") as history_tab:
                gallery_tab = build_gallery_tab()
                with gr.Row():
                    png_drop = gr.File(label="Drop a PNG to read its parameters into Text to image",
                                       file_types=[".png"], elem_id="png-drop", type="filepath")
                    png_info = gr.Textbox(label="Its parameters", lines=4, interactive=False, elem_id="png-info")
            with gr.Tab("Train", id="train", elem_id="tab-train"):
                train_form, train_view, train_start, train_cancel = build_train_tab(studio)
            with gr.Tab("Understand", id="understand", elem_id="tab-understand"):
                understand = build_understand_tab(studio)
            with gr.Tab("Models & settings", id="settings", elem_id="tab-settings"):
                settings_tab = build_settings_tab(studio)

        def pickers() -> dict:
            """Every model and LoRA picker, re-read from the models folder."""
            names, loras = studio.model_names(), lora_names(studio)
            return {t_form.model: gr.update(choices=names), i_form.model: gr.update(choices=names),
                    train_form.base_model: gr.update(choices=names), settings_tab.default_model: gr.update(choices=names),
                    t_form.lora: gr.update(choices=loras), i_form.lora: gr.update(choices=loras),
                    settings_tab.models: model_rows(studio),
                    settings_tab.vision_model: gr.update(choices=studio.vision.names())}

        picker_outputs = [t_form.model, i_form.model, train_form.base_model, settings_tab.default_model,
                          t_form.lora, i_form.lora, settings_tab.models, settings_tab.vision_model]
        settings_tab.refresh.click(pickers, outputs=picker_outputs)

        training, follow_training = wire_training(studio, train_form, train_view, train_start, train_cancel)
        reconnects = [
            (wire_generation(studio, "txt2img", t_form, t_recycle, t_view, t_generate, t_cancel), t_view.outputs,
             t_generate),
            (wire_generation(studio, "img2img", i_form, i_recycle, i_view, i_generate, i_cancel, editor, strength,
                             blur), i_view.outputs, i_generate),
            (follow_training, train_view.outputs, train_start),
        ]
        load_history = wire_gallery(studio, gallery_tab, t_form, png_drop, png_info)
        history_tab.select(load_history, outputs=gallery_tab.gallery)
        png_drop.upload(lambda: gr.Tabs(selected="txt2img"), outputs=tabs)

        def send(gallery: list | None, selected: str) -> dict:
            path = _first_image(gallery, selected)
            if path is None:
                raise gr.Error("No image to send yet.")
            return {editor: _editor_value(path), tabs: gr.Tabs(selected="img2img")}

        def remember(event: gr.SelectData) -> str:
            value = event.value
            return value["image"]["path"] if isinstance(value, dict) and value.get("image") else ""

        t_view.gallery.select(remember, outputs=t_selected)
        t_send.click(send, inputs=[t_view.gallery, t_selected], outputs=[editor, tabs])
        gallery_tab.send_to_img2img.click(lambda selected: send(None, selected), inputs=gallery_tab.selected,
                                          outputs=[editor, tabs])
        understand.send_enhanced.click(lambda text: {t_form.prompt: text, tabs: gr.Tabs(selected="txt2img")},
                                       inputs=understand.enhanced, outputs=[t_form.prompt, tabs])
        for handler, outputs, start in reconnects:
            following = demo.load(handler, outputs=outputs, concurrency_limit=None)
            start.click(None, cancels=[following])  # a new job replaces the one followed since the load
            if handler is follow_training:  # a trained LoRA or model joins every picker
                for event in (training, following):
                    event.then(pickers, outputs=picker_outputs)
        demo.load(load_history, outputs=gallery_tab.gallery)
    return demo


def mount_ui(app: FastAPI, studio: Studio) -> FastAPI:
    """Serve the page at ``/`` (after the API routes, which keep their paths), behind the login
    page when the server needs credentials. Images reach the page through the service (which
    checks whose they are), never by a path into the job folders."""
    demo = build_ui(studio)
    auth = install_login(app, studio) if studio.auth.required else None
    # Gradio's idle queue loop polls every millisecond (0.11 s of CPU per second with no page
    # open, measured by bench/ui.py); 20 ms costs a click at most 20 ms and a fifth of the CPU.
    if hasattr(demo._queue, "sleep_when_free"):
        demo._queue.sleep_when_free = max(demo._queue.sleep_when_free, 0.02)
    return gr.mount_gradio_app(
        app, demo, path="/", auth_dependency=auth, theme=THEME, css=CSS, footer_links=["api"], ssr_mode=False,
    )
