"""The Understand tab: caption an image, ask about it, chat with images, enhance a prompt;
through the local tiny VLM by default or a remote OpenAI-compatible endpoint chosen in
Models & settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import gradio as gr
from PIL import Image

from dreamloom.server.studio import Studio
from dreamloom.vision.backends import VisionBackend, VisionError
from dreamloom.vision.images import load_image
from dreamloom.vision.messages import Message
from dreamloom.vision.service import VisionConfig, open_backend


@dataclass
class VisionChoice:
    """The vision backend the page uses: a model of the server's vision service (local), or a
    remote endpoint opened from ``config`` (kept until the choice changes)."""

    studio: Studio
    config: VisionConfig = field(default_factory=VisionConfig)
    _remote: VisionBackend | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def choose(self, config: VisionConfig) -> None:
        with self._lock:
            self.config, self._remote = config, None

    def backend(self) -> VisionBackend:
        if self.config.backend == "local":
            return self.studio.vision.backend(self.config.model)
        with self._lock:
            if self._remote is None:
                self._remote = open_backend(self.config, self.studio.settings)
            return self._remote

    def describe(self) -> str:
        if self.config.backend == "local":
            return f"local: {self.config.model or self.studio.vision.default}"
        return f"remote: {self.config.model or 'default model'} at {self.config.base_url or '$DREAMLOOM_VISION_BASE_URL'}"


def _ask(choice: VisionChoice, action) -> str:
    """Run ``action(backend)``; a bad input or an unreachable model is a message, not a traceback."""
    try:
        return action(choice.backend())
    except (ValueError, VisionError) as error:
        raise gr.Error(str(error)) from None


@dataclass
class UnderstandTab:
    enhanced: gr.Textbox
    send_enhanced: gr.Button


def build_understand_tab(choice: VisionChoice) -> UnderstandTab:
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Image", type="pil", elem_id="vision-image")
        with gr.Column():
            caption_button = gr.Button("Caption", elem_id="vision-caption-button")
            caption = gr.Textbox(label="Caption", interactive=False, elem_id="vision-caption")
            question = gr.Textbox(label="Question", placeholder="What colour is the circle?", elem_id="vision-question")
            ask_button = gr.Button("Ask", elem_id="vision-ask-button")
            answer = gr.Textbox(label="Answer", interactive=False, elem_id="vision-answer")
    with gr.Row():
        prompt = gr.Textbox(label="Short prompt", placeholder="a red star", elem_id="vision-prompt", scale=3)
        enhance_button = gr.Button("Enhance", elem_id="vision-enhance-button", scale=0)
    with gr.Row():
        enhanced = gr.Textbox(label="Enhanced prompt", interactive=False, elem_id="vision-enhanced", scale=3)
        send = gr.Button("Send to txt2img", elem_id="vision-send", scale=0)
    chatbot = gr.Chatbot(label="Chat", elem_id="vision-chat", height=300)
    chat_input = gr.MultimodalTextbox(file_types=["image"], placeholder="Ask about an image (attach one) ...", label="Message",
                                      elem_id="vision-chat-input")

    def caption_of(picture: Image.Image | None) -> str:
        if picture is None:
            raise gr.Error("Upload an image to caption.")
        return _ask(choice, lambda backend: backend.caption(picture))

    def ask(picture: Image.Image | None, text: str) -> str:
        if picture is None:
            raise gr.Error("Upload an image to ask about.")
        return _ask(choice, lambda backend: backend.ask(picture, text))

    def chat(entry: dict, history: list[dict]) -> Iterator[tuple[list[dict], dict]]:
        text = (entry or {}).get("text", "").strip()
        files = [_file_path(f) for f in (entry or {}).get("files", [])]
        if not text and not files:
            raise gr.Error("Type a message (and attach an image if it is about one).")
        try:
            images = [load_image(path) for path in files]
        except ValueError as error:
            raise gr.Error(str(error)) from None
        turns = [*_turns(history), Message("user", [*images, text] if text else images)]
        history = [*history, *({"role": "user", "content": {"path": path}} for path in files)]
        if text:
            history.append({"role": "user", "content": text})
        history.append({"role": "assistant", "content": ""})
        try:
            for piece in choice.backend().stream(turns):
                history[-1]["content"] += piece
                yield history, gr.update(value=None)
        except (ValueError, VisionError) as error:
            raise gr.Error(str(error)) from None
        yield history, gr.update(value=None)

    caption_button.click(caption_of, inputs=image, outputs=caption)
    ask_button.click(ask, inputs=[image, question], outputs=answer)
    question.submit(ask, inputs=[image, question], outputs=answer)
    enhance_button.click(lambda text: _ask(choice, lambda backend: backend.enhance(text)), inputs=prompt,
                         outputs=enhanced)
    chat_input.submit(chat, inputs=[chat_input, chatbot], outputs=[chatbot, chat_input])
    return UnderstandTab(enhanced, send)


def _file_path(file) -> str:
    return file.get("path") if isinstance(file, dict) else getattr(file, "path", file)


def _text(content) -> str:
    """The text of a chat message's content (a string, or Gradio's list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    return ""


def _turns(history: list[dict]) -> list[Message]:
    """Earlier chat turns as messages, text only (an image is read by the turn that sends it)."""
    return [Message(turn["role"], [text]) for turn in history if (text := _text(turn.get("content")))]
