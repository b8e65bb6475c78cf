"""Models & settings: what the models folder holds (refreshable), the default model (the same
option AUTOMATIC1111's ``/sdapi/v1/options`` sets), the server's limits, and which vision
backend the Understand tab uses."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import gradio as gr
from pydantic import ValidationError

from dreamloom.server.studio import Studio
from dreamloom.ui import controls
from dreamloom.ui.generation import error_message
from dreamloom.ui.understand import VisionChoice
from dreamloom.vision.service import VisionConfig


def model_rows(studio: Studio) -> list[list[str]]:
    registry = studio.engine.models.registry
    rows = [[e.name, e.format, "embedded" if e.embedded else e.location] for e in registry.entries()]
    rows += [[e.name, "lora", e.location] for e in registry.loras()]
    rows += [[e.name, "vision", e.location] for e in studio.vision.models()]
    return rows


@dataclass
class SettingsTab:
    models: gr.Dataframe
    refresh: gr.Button
    default_model: gr.Dropdown


def build_settings_tab(studio: Studio, choice: VisionChoice) -> SettingsTab:
    V = VisionConfig
    with gr.Row():
        refresh = gr.Button("Refresh models", elem_id="settings-refresh", scale=0)
        default_model = gr.Dropdown(studio.model_names(), value=studio.default_model, label="Default model",
                                    info="The model new forms start with (AUTOMATIC1111's sd_model_checkpoint).",
                                    elem_id="settings-default-model")
    models = gr.Dataframe(model_rows(studio), headers=["name", "kind", "location"], interactive=False,
                          label="Models folder", elem_id="settings-models")
    gr.JSON(studio.config.limits.model_dump(), label="Limits (set when the server starts)", elem_id="settings-limits")
    with gr.Group():
        backend = gr.Radio(list(typing.get_args(V.model_fields["backend"].annotation)), value="local",
                           label="Vision backend", info=controls.help_text(V, "backend"), elem_id="settings-vision")
        model = controls.textbox(V, "model", "Vision model", elem_id="settings-vision-model")
        base_url = controls.textbox(V, "base_url", "Endpoint (remote)", elem_id="settings-vision-url",
                                    placeholder="https://openrouter.ai/api/v1")
        apply = gr.Button("Use this backend", elem_id="settings-vision-apply")
        status = gr.Markdown(f"Vision: {choice.describe()}", elem_id="settings-vision-status")

    def use(kind: str, name: str, url: str) -> str:
        try:
            choice.choose(VisionConfig(backend=kind, model=name or None, base_url=url or None))
        except ValidationError as error:
            raise gr.Error(error_message(error)) from None
        return f"Vision: {choice.describe()}"

    def set_default(name: str) -> None:
        studio.options["sd_model_checkpoint"] = name

    apply.click(use, inputs=[backend, model, base_url], outputs=status)
    default_model.change(set_default, inputs=default_model)
    return SettingsTab(models, refresh, default_model)
