"""The Understand tab: caption an image, ask about it, chat with images, enhance a prompt;
through the caller's vision model (Models & settings): the local tiny VLM by default, or the
operator's remote OpenAI-compatible endpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from dreamloom.service.errors import ServiceError
from dreamloom.service.studio import Studio
from dreamloom.ui.session import principal_of
from dreamloom.vision.backends import VisionBackend, VisionError
from dreamloom.vision.images import load_image
from dreamloom.vision.messages import Message


def _ask(studio: Studio, request: gr.Request, action: Callable[[VisionBackend], str]) -> str:
    """Run ``action`` on the caller's vision backend; a bad input or an unreachable model is a
    message, not a traceback."""
    try:
        return action(studio.vision_backend(principal_of(studio, request)))
    except (ValueError, VisionError, ServiceError) as error:
        raise gr.Error(str(error)) from None


@dataclass
class UnderstandTab:
    enhanced: gr.Textbox
    send_enhanced: gr.Button


def build_understand_tab(studio: Studio) -> UnderstandTab:
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

    def caption_of(picture: Image.Image | None, request: gr.Request) -> str:
        if picture is None:
            raise gr.Error("Upload an image to caption.")
        return _ask(studio, request, lambda backend: backend.caption(picture))

    def ask(picture: Image.Image | None, text: str, request: gr.Request) -> str:
        if picture is None:
            raise gr.Error("Upload an image to ask about.")
        return _ask(studio, request, lambda backend: backend.ask(picture, text))

    def enhance(text: str, request: gr.Request) -> str:
        return _ask(studio, request, lambda backend: backend.enhance(text))

    def chat(entry: dict, history: list[dict], request: gr.Request) -> Iterator[tuple[list[dict], dict]]:
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
            for piece in studio.vision_backend(principal_of(studio, request)).stream(turns):
                history[-1]["content"] += piece
                yield history, gr.update(value=None)
        except (ValueError, VisionError, ServiceError) as error:
            raise gr.Error(str(error)) from None
        yield history, gr.update(value=None)

    caption_button.click(caption_of, inputs=image, outputs=caption)
    ask_button.click(ask, inputs=[image, question], outputs=answer)
    question.submit(ask, inputs=[image, question], outputs=answer)
    enhance_button.click(enhance, inputs=prompt, outputs=enhanced)
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
