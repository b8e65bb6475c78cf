"""Chat messages in OpenAI's format, checked once and held as text and images in order.

Callers (the CLI, the HTTP API, Python code) speak OpenAI's format: ``{"role": ..., "content":
"text" | [{"type": "text", "text": ...}, {"type": "image_url", "image_url": {"url": "data:..."}}]}``;
Python callers may also pass ``{"type": "image", "image": <PIL image>}``. Backends get
``Message`` objects and write them out as their model wants: a chat template and a list of
images for transformers, OpenAI JSON with inline ``data:`` URLs for a remote endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from dreamloom.images import MAX_PIXELS, check_size
from dreamloom.vision.images import decode_data_url, to_data_url

ROLES = ("system", "user", "assistant")
#: OpenAI's newer name for the system role.
_ALIASES = {"developer": "system"}

Part = str | Image.Image


#: Most characters of text one chat may hold: a long prompt or document fits; a megabyte, which
#: a model would try to attend to whole (tens of GB), is refused before it reaches one.
MAX_TEXT_CHARS = 32_768

class MessageError(ValueError):
    """A message that cannot be read; ``loc`` is where, e.g. ``("messages", 1, "content", 0)``."""

    def __init__(self, loc: tuple, reason: str):
        super().__init__(f"{'.'.join(map(str, loc))}: {reason}")
        self.loc, self.reason = loc, reason


@dataclass(frozen=True)
class Message:
    """One turn: its role and its parts (text and images) in order."""

    role: str
    parts: list[Part]

    @property
    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))

    @property
    def images(self) -> list[Image.Image]:
        return [p for p in self.parts if isinstance(p, Image.Image)]


def _image_part(part: dict, loc: tuple, max_pixels: int) -> Image.Image:
    if part["type"] == "image":
        image = part.get("image")
        if not isinstance(image, Image.Image):
            raise MessageError((*loc, "image"), "must be a PIL image")
        return check_size(image, ".".join(map(str, loc)), max_pixels).convert("RGB")
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        raise MessageError((*loc, "image_url"), "expected {\"url\": \"data:image/...;base64,...\"}")
    if url.startswith(("http://", "https://")):
        raise MessageError((*loc, "image_url", "url"), "send the image inline as a data:image/...;base64 URL; "
                                                          "dreamloom does not fetch images from the network")
    try:
        return decode_data_url(url, "the image", max_pixels)
    except ValueError as error:
        raise MessageError((*loc, "image_url", "url"), str(error)) from None


def _text(value: str, loc: tuple) -> str:
    """``value`` once it is text a model can take: no NUL characters, valid Unicode."""
    if "\x00" in value:
        raise MessageError(loc, "contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError(loc, "is not valid Unicode (a lone surrogate)") from None
    return value


def _parts(content: object, loc: tuple, max_pixels: int) -> list[Part]:
    if isinstance(content, str):
        return [_text(content, loc)]
    if not isinstance(content, list) or not content:
        raise MessageError(loc, "expected a string or a non-empty list of content parts")
    parts: list[Part] = []
    for i, part in enumerate(content):
        where = (*loc, i)
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise MessageError((*where, "text"), "expected a string")
            parts.append(_text(part["text"], (*where, "text")))
        elif kind in ("image_url", "image"):
            parts.append(_image_part(part, where, max_pixels))
        else:
            raise MessageError((*where, "type"), f"unsupported content part {kind!r}; use text or image_url")
    return parts


def parse_messages(messages: list[dict | Message], max_pixels: int = MAX_PIXELS) -> list[Message]:
    """``messages`` checked and decoded; a ``MessageError`` names the first bad field."""
    if not isinstance(messages, list) or not messages:
        raise MessageError(("messages",), "expected a non-empty list of messages")
    parsed = []
    for i, message in enumerate(messages):
        if isinstance(message, Message):
            parsed.append(message)
            continue
        if not isinstance(message, dict):
            raise MessageError(("messages", i), "expected an object with role and content")
        role = _ALIASES.get(message.get("role"), message.get("role"))
        if role not in ROLES:
            raise MessageError(("messages", i, "role"), f"unsupported role {message.get('role')!r}; use "
                                                        "system, user or assistant")
        parts = _parts(message.get("content"), ("messages", i, "content"), max_pixels)
        if role == "system" and any(isinstance(p, Image.Image) for p in parts):
            raise MessageError(("messages", i, "content"), "a system message holds text only")
        parsed.append(Message(role, parts))
    if not any(m.role == "user" for m in parsed):
        raise MessageError(("messages",), "no user message: there is nothing to answer")
    length = sum(len(part) for m in parsed for part in m.parts if isinstance(part, str))
    if length > MAX_TEXT_CHARS:
        raise MessageError(("messages",), f"{length} characters of text, over the limit of {MAX_TEXT_CHARS}")
    return parsed


def trained_order(parts: list[Part]) -> list[Part]:
    """``parts`` in the order vision-language models are trained on: a turn's one image
    first, then its text; consecutive text parts joined by a newline.

    Chat templates write parts in the order given, and OpenAI clients send the text before
    the image, but Llama 4 (Meta's prompt format: ``<|image|>`` then the question), Llama
    3.2 Vision, LLaVA and Qwen-VL were all trained with the image first; a model that never
    saw the question before the image may not answer it (dreamloom-tiny-vlm closed its turn
    at once). With one image its place carries no meaning, so it moves; several images may
    be interleaved with text that refers to each ("this one ... that one"), so they stay.
    Templates join text parts with nothing between: "What colour is" + "the circle?" would
    read "isthe"."""
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = f"{merged[-1].rstrip()}\n{part.lstrip()}"
        else:
            merged.append(part)
    images = [p for p in merged if isinstance(p, Image.Image)]
    if len(images) != 1:
        return merged
    texts = [p for p in merged if isinstance(p, str)]
    return images + (["\n".join(t.strip() for t in texts)] if texts else [])


def to_template(messages: list[Message]) -> tuple[list[dict], list[Image.Image]]:
    """The messages as transformers' chat templates read them (an ``{"type": "image"}`` part
    where each image goes, the system prompt as a plain string), each turn's parts in
    ``trained_order``, and the images in order."""
    rendered, images = [], []
    for message in messages:
        if message.role == "system":
            rendered.append({"role": "system", "content": message.text})
            continue
        content = []
        for part in trained_order(message.parts):
            if isinstance(part, Image.Image):
                images.append(part)
                content.append({"type": "image"})
            else:
                content.append({"type": "text", "text": part})
        rendered.append({"role": message.role, "content": content})
    return rendered, images


def to_openai(messages: list[Message], max_side: int) -> list[dict]:
    """The messages as OpenAI's chat completions API takes them: text-only content as a plain
    string (the system prompt always), images as downscaled inline ``data:`` URLs."""
    out = []
    for message in messages:
        if not message.images:
            out.append({"role": message.role, "content": message.text})
            continue
        content = [{"type": "image_url", "image_url": {"url": to_data_url(p, max_side)}} if isinstance(p, Image.Image)
                   else {"type": "text", "text": p} for p in message.parts]
        out.append({"role": message.role, "content": content})
    return out
