"""The vision model over HTTP: OpenAI's chat completions (``/v1/chat/completions``, images as
``data:`` URLs, streaming as server-sent events), SD.Next's ``/sdapi/v1/vqa`` and
``/sdapi/v1/caption``, and the captioning behind AUTOMATIC1111's ``/sdapi/v1/interrogate``.

The handlers hold no model logic: they check the request, then call the studio's
``VisionService`` in a worker thread, so the event loop keeps serving (and streaming)
while a model answers. Answers are short and interactive (a chat streams its tokens), so
they run beside the job queue rather than through it; each model's lock keeps one
generation at a time on it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from dreamloom.server.auth import Caller, StudioDep, caller
from dreamloom.server.openai_images import OpenAIErrorRoute
from dreamloom.service.errors import InvalidField, NotFound, Unavailable
from dreamloom.service.principals import Principal
from dreamloom.service.studio import Studio
from dreamloom.vision.backends import Completion, GenerationOptions, TokenStream, VisionBackend, VisionError
from dreamloom.text import Text
from dreamloom.vision.messages import MAX_TEXT_CHARS, Message, MessageError, parse_messages
from dreamloom.vision.prompts import CAPTION_PROMPT

openai_router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(caller)], route_class=OpenAIErrorRoute)
sdnext_router = APIRouter(prefix="/sdapi/v1", tags=["sdnext"], dependencies=[Depends(caller)])

#: SD.Next's caption tasks, all answered as the model's caption.
_CAPTION_TASKS = {"short caption", "normal caption", "long caption", "describe the image", "caption"}
#: Names clients send for captioners dreamloom does not have (A1111's CLIP interrogator and
#: DeepBooru, SD.Next's OpenCLIP models): they get the default vision model's caption.
_CAPTIONER_NAMES = ("clip", "deepdanbooru", "deepbooru", "ViT-")


async def _run(fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` in a worker thread, its refusals as the service's: a bad message names
    its field, a remote backend's failure is ``Unavailable`` (a 502)."""
    try:
        return await run_in_threadpool(fn, *args)
    except MessageError as error:
        raise InvalidField(tuple(error.loc), error.reason) from None
    except VisionError as error:
        raise Unavailable(str(error)) from None


async def vision_backend(studio: Studio, principal: Principal, name: str | None) -> VisionBackend:
    """The vision backend ``name`` (None: the caller's or the server's), loaded on first use."""
    return await _run(studio.vision_backend, principal, name)


def _image(studio: Studio, data: str, field: str) -> Image.Image:
    """The base64 image (with or without a ``data:`` prefix) of ``field``, under the server's pixel cap."""
    return studio.policy.image(data, field)


async def caption_b64(studio: Studio, principal: Principal, data: str, model: str | None) -> str:
    """The caption of a base64 image, by ``model`` or, for a captioner dreamloom lacks, the default model."""
    image = await run_in_threadpool(_image, studio, data, "image")
    if model is not None and model.startswith(_CAPTIONER_NAMES) and model not in studio.vision.names():
        model = None
    backend = await vision_backend(studio, principal, model)
    return await _run(backend.caption, image)


# --- OpenAI: chat completions -------------------------------------------------------------------

class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="Send a last chunk with the token counts.")


class ChatRequest(BaseModel):
    """OpenAI's chat completion request; fields it has that mean nothing here (``tools``,
    ``user``, ``seed``, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="A vision model from GET /v1/models; none: dreamloom-tiny-vlm.")
    messages: list[Any] = Field(..., description="system/user/assistant messages; images as image_url parts "
                                                 "holding data:image/...;base64 URLs.")
    stream: bool = Field(False, description="Send the answer as server-sent chat.completion.chunk events.")
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=8192, description="Most tokens in the answer (older name).")
    max_completion_tokens: int | None = Field(None, ge=1, le=8192, description="Most tokens in the answer.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 or none: greedy; above 0: sampling.")
    n: int = Field(1, ge=1, le=1, description="Choices per request: one.")

    def options(self, backend: VisionBackend) -> GenerationOptions:
        limit = self.max_completion_tokens or self.max_tokens or backend.options.max_new_tokens
        return GenerationOptions(max_new_tokens=limit, temperature=self.temperature or 0.0)


def _usage(completion: Completion) -> dict:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def _events(stream: TokenStream, head: dict, include_usage: bool) -> AsyncIterator[str]:
    """OpenAI's stream: a role chunk, a chunk per piece of text, a chunk with the finish reason,
    the usage chunk when asked for, then ``data: [DONE]``."""
    def chunk(delta: dict, finish: str | None = None) -> str:
        return _sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for piece in iterate_in_threadpool(iter(stream)):
            yield chunk({"content": piece})
    except Exception as error:  # the response has begun: the error can only travel in the stream
        yield _sse({"error": {"message": f"{type(error).__name__}: {error}", "type": "server_error",
                              "param": None, "code": None}})
        return
    completion = stream.completion
    yield chunk({}, completion.finish_reason)
    if include_usage:
        yield _sse({**head, "choices": [], "usage": _usage(completion)})
    yield "data: [DONE]\n\n"


@openai_router.post("/chat/completions", summary="Chat with a vision model about images (OpenAI-compatible)")
async def chat_completions(body: ChatRequest, principal: Caller, studio: StudioDep):
    try:
        backend = await vision_backend(studio, principal, body.model)
    except InvalidField as error:  # OpenAI answers an unknown model with 404 model_not_found
        raise NotFound(error.problems[0].msg) from None
    messages = await _run(parse_messages, body.messages, studio.policy.max_pixels)
    options = body.options(backend)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": backend.name}
    if body.stream:
        stream = await _run(backend.stream, messages, options)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_events(stream, {**head, "object": "chat.completion.chunk"}, include_usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    completion = await _run(backend.complete, messages, options)
    return {**head, "object": "chat.completion", "usage": _usage(completion),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                         "finish_reason": completion.finish_reason, "logprobs": None}]}


# --- SD.Next: vqa and caption -------------------------------------------------------------------

class VqaRequest(BaseModel):
    """SD.Next's ``ReqVQA``. Its fields for features dreamloom lacks (annotated images, thinking
    mode, beams, prefill) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    image: str = Field("", description="The image, base64 PNG or JPEG.")
    model: str | None = Field(None, description="A vision model (GET /sdapi/v1/vqa/models); none: the default.")
    question: Text = Field("describe the image", max_length=MAX_TEXT_CHARS,
                           description="A question, a caption task (Short/Normal/Long Caption), or 'Use Prompt' "
                                       "to ask `prompt`.")
    prompt: Text | None = Field(None, max_length=MAX_TEXT_CHARS,
                                description="The question when `question` is 'Use Prompt'.")
    system: Text | None = Field(None, max_length=MAX_TEXT_CHARS,
                                description="System prompt; none: the model's own behaviour.")
    max_tokens: int | None = Field(None, ge=1, le=8192, description="Most tokens in the answer.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature (with do_sample).")
    do_sample: bool | None = Field(None, description="Sample instead of greedy decoding.")

    def question_text(self) -> str:
        task = self.question.strip()
        if task.lower() == "use prompt":
            if not self.prompt or not self.prompt.strip():
                raise InvalidField("prompt", "required when question is 'Use Prompt'")
            return self.prompt.strip()
        if not task or task.lower().rstrip(".") in _CAPTION_TASKS:
            return CAPTION_PROMPT
        return task

    def options(self, backend: VisionBackend) -> GenerationOptions:
        sampling = self.do_sample is not False and bool(self.temperature)
        return GenerationOptions(max_new_tokens=self.max_tokens or backend.options.max_new_tokens,
                                 temperature=self.temperature if sampling else 0.0)


class CaptionRequest(VqaRequest):
    """SD.Next's caption dispatch: ``backend`` picks the captioner. dreamloom answers ``vlm``
    with its vision model and ``openclip`` with that model's caption (it has no CLIP interrogator)."""

    backend: str = Field("openclip", description="openclip (a caption) or vlm (an answer to `question`).")


async def _vqa(body: VqaRequest, studio: Studio, principal: Principal) -> str:
    question = body.question_text()
    image = await run_in_threadpool(_image, studio, body.image, "image")
    backend = await vision_backend(studio, principal, body.model)
    messages = ([Message("system", [body.system])] if body.system else []) + [Message("user", [image, question])]
    completion = await _run(backend.complete, messages, body.options(backend))
    return completion.text


@sdnext_router.post("/vqa", summary="Ask a vision model about an image (SD.Next-compatible)")
async def vqa(body: VqaRequest, principal: Caller, studio: StudioDep) -> dict:
    return {"answer": await _vqa(body, studio, principal), "annotated_image": None}


@sdnext_router.post("/caption", summary="Caption an image (SD.Next-compatible dispatch)")
async def caption(body: CaptionRequest, principal: Caller, studio: StudioDep) -> dict:
    fields = dict.fromkeys(("caption", "medium", "artist", "movement", "trending", "flavor", "tags", "scores",
                            "answer", "annotated_image"))
    if body.backend == "vlm":
        return {"backend": "vlm", **fields, "answer": await _vqa(body, studio, principal)}
    if body.backend == "openclip":
        return {"backend": "openclip", **fields, "caption": await caption_b64(studio, principal, body.image,
                                                                              body.model)}
    raise InvalidField("backend", f"dreamloom captions with its vision model: use vlm or openclip, not {body.backend!r}")


@sdnext_router.get("/vqa/models", summary="The vision models (SD.Next-compatible)")
async def vqa_models(studio: StudioDep) -> list[dict]:
    return [{"name": name, "repo": name, "prompts": ["Use Prompt", "Short Caption", "Normal Caption", "Long Caption"],
             "capabilities": ["caption", "vqa"]} for name in studio.vision.names()]
