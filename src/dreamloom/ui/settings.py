"""Models & settings: what the models folder holds (refreshable), the default model (the
same preference AUTOMATIC1111's ``/sdapi/v1/options`` sets: the server's for the operator,
the caller's own for anyone else), the server's limits, the caller's vision model among
those the operator offers, and, for the operator, the server's vision backend."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import gradio as gr
from pydantic import ValidationError

from dreamloom.service.errors import ServiceError
from dreamloom.service.studio import Studio
from dreamloom.ui import controls
from dreamloom.ui.generation import error_message
from dreamloom.ui.session import principal_of
from dreamloom.vision.service import VisionConfig


def model_rows(studio: Studio) -> list[list[str]]:
    rows = [[e.name, e.format, "embedded" if e.embedded else studio.shown(e)] for e in studio.models()]
    rows += [[e.name, "lora", studio.shown(e)] for e in studio.loras()]
    rows += [[e.name, "vision", "embedded" if e.embedded else e.name] for e in studio.vision.local.models()]
    return rows


@dataclass
class SettingsTab:
    models: gr.Dataframe
    refresh: gr.Button
    default_model: gr.Dropdown
    vision_model: gr.Dropdown


def build_settings_tab(studio: Studio) -> SettingsTab:
    V = VisionConfig
    with gr.Row():
        refresh = gr.Button("Refresh models", elem_id="settings-refresh", scale=0)
        default_model = gr.Dropdown(studio.model_names(), value=studio.preferences.server.model,
                                    label="Default model", elem_id="settings-default-model",
                                    info="The model new forms start with (AUTOMATIC1111's sd_model_checkpoint): "
                                         "the server's when the operator sets it, else yours alone.")
        vision_model = gr.Dropdown(studio.vision.names(), value=studio.vision.default, label="Your vision model",
                                   info="Which of the vision models the operator offers answers you.",
                                   elem_id="settings-vision-choice")
    models = gr.Dataframe(model_rows(studio), headers=["name", "kind", "location"], interactive=False,
                          label="Models folder", elem_id="settings-models")
    gr.JSON(studio.config.limits.model_dump(), label="Limits (set when the server starts)", elem_id="settings-limits")
    with gr.Accordion("Server's vision backend (operator only)", open=True):
        backend = gr.Radio(list(typing.get_args(V.model_fields["backend"].annotation)), value=V().backend,
                           label="Vision backend", info=controls.help_text(V, "backend"), elem_id="settings-vision")
        model = controls.textbox(V, "model", "Vision model", elem_id="settings-vision-model")
        base_url = controls.textbox(V, "base_url", "Endpoint (remote)", elem_id="settings-vision-url",
                                    placeholder="https://openrouter.ai/api/v1")
        apply = gr.Button("Use this backend", elem_id="settings-vision-apply")
        status = gr.Markdown(f"Vision: {studio.vision.describe()}", elem_id="settings-vision-status")

    def use(kind: str, name: str, url: str, request: gr.Request) -> dict:
        try:
            config = VisionConfig(backend=kind, model=name or None, base_url=url or None)
            studio.configure_vision(principal_of(studio, request), config)
        except (ValidationError, ServiceError) as error:
            raise gr.Error(error_message(error)) from None
        return {status: f"Vision: {studio.vision.describe()}",
                vision_model: gr.update(choices=studio.vision.names(), value=studio.vision.default)}

    def set_default(name: str, request: gr.Request) -> None:
        principal = principal_of(studio, request)
        try:
            studio.set_preferences(principal, server_wide=principal.operator, model=name)
        except ServiceError as error:
            raise gr.Error(error_message(error)) from None

    def choose_vision(name: str, request: gr.Request) -> None:
        try:
            studio.set_preferences(principal_of(studio, request), vision=name)
        except ServiceError as error:
            raise gr.Error(error_message(error)) from None

    apply.click(use, inputs=[backend, model, base_url], outputs=[status, vision_model])
    default_model.input(set_default, inputs=default_model)
    vision_model.input(choose_vision, inputs=vision_model)
    return SettingsTab(models, refresh, default_model, vision_model)
