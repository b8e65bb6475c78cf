"""The one interface every vision-language backend offers: caption, ask, chat, enhance.

A backend only has to answer OpenAI-style chat messages (``complete`` whole, or ``stream``
piece by piece); captioning, questions and prompt enhancement are chats built here, the
same for a local transformers model and a remote OpenAI-compatible endpoint, so a front
end (CLI, HTTP API) never cares which one it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, overload

from pydantic import BaseModel, Field

from dreamloom.vision.images import ImageInput, load_image
from dreamloom.vision.messages import Message, parse_messages
from dreamloom.vision.prompts import CAPTION_PROMPT, ENHANCE_SYSTEM


class VisionError(OSError):
    """The backend could not answer: an unreachable endpoint, refused credentials, a provider
    error. An ``OSError`` like the connection errors beneath it, so front ends that report
    I/O failures in one line report these too."""


class GenerationOptions(BaseModel):
    """How much to generate and how randomly; greedy (temperature 0) unless asked otherwise,
    so the same question gets the same answer."""

    max_new_tokens: int = Field(128, ge=1, le=8192, description="Most tokens in the answer.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy decoding; above 0: sampling.")


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    """One whole answer with OpenAI's accounting: tokens read and written, and why it stopped
    (``"length"``: ``max_new_tokens`` cut it off)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason = "stop"


class EmptyAnswer(VisionError):
    """The model wrote no text: it closed its turn at once (``finish_reason`` "stop"), or
    ``max_new_tokens`` ran out before a word (only special tokens, "length"). Raised instead
    of returning "", which a client cannot tell from a lost answer; ``completion`` holds the
    token counts, so a front end can still report them."""

    def __init__(self, model: str, completion: Completion):
        if completion.finish_reason == "length":
            why = (f"max_new_tokens={completion.completion_tokens} ran out before any text (only special tokens); "
                   "allow more tokens")
        else:
            why = (f"it ended its turn after {completion.completion_tokens} token(s) without a word; the question "
                   "may be outside what it has learned: ask it another way")
        super().__init__(f"{model} gave an empty answer: {why}")
        self.completion = completion


class TokenStream:
    """An answer arriving piece by piece: iterate for the text deltas; once exhausted,
    ``completion`` holds the whole answer and its token counts."""

    def __init__(self, pieces: Iterator[str], finish: Callable[[str], Completion]):
        self._pieces, self._finish = pieces, finish
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        parts = []
        for piece in self._pieces:
            if piece:
                parts.append(piece)
                yield piece
        self.completion = self._finish("".join(parts))


class VisionBackend(ABC):
    """A vision-language model. Subclasses implement ``complete`` and ``stream``; the rest are
    the chats dreamloom asks of every model."""

    #: The model's name as front ends show it (a registry name, a path, a provider's model id).
    name: str
    options: GenerationOptions

    @abstractmethod
    def complete(self, messages: list[Message], options: GenerationOptions | None = None) -> Completion:
        """Answer ``messages`` (already parsed) in one piece; ``EmptyAnswer`` if it has no text."""

    @abstractmethod
    def stream(self, messages: list[Message], options: GenerationOptions | None = None) -> TokenStream:
        """Answer ``messages`` (already parsed) piece by piece; the stream raises ``EmptyAnswer``
        at its end if no text came."""

    def _answered(self, completion: Completion) -> Completion:
        """``completion`` if it holds text; every backend's answers pass here, so none is empty."""
        if not completion.text.strip():
            raise EmptyAnswer(self.name, completion)
        return completion

    @overload
    def chat(self, messages: list[dict | Message], stream: Literal[False] = False,
             options: GenerationOptions | None = None) -> str: ...
    @overload
    def chat(self, messages: list[dict | Message], stream: Literal[True],
             options: GenerationOptions | None = None) -> TokenStream: ...

    def chat(self, messages, stream=False, options=None):
        """Answer OpenAI-style ``messages`` (roles system/user/assistant; content a string or
        a list of ``text`` and ``image_url``/``image`` parts); ``stream=True`` gives the text
        as it is generated."""
        parsed = parse_messages(messages)
        return self.stream(parsed, options) if stream else self.complete(parsed, options).text

    def caption(self, image: ImageInput) -> str:
        """A one-sentence description of ``image`` (the model's answer to ``CAPTION_PROMPT``);
        ``EmptyAnswer`` rather than an empty caption."""
        return self.ask(image, CAPTION_PROMPT)

    def ask(self, image: ImageInput, question: str) -> str:
        """The model's answer to ``question`` about ``image``; ``EmptyAnswer`` if it has none."""
        if not question or not question.strip():
            raise ValueError("the question is empty: ask something about the image")
        message = Message("user", [load_image(image), question.strip()])
        return self.complete([message]).text.strip()

    def enhance(self, prompt: str) -> str:
        """``prompt`` rewritten into a fuller image prompt by an instruction-following model
        (``ENHANCE_SYSTEM``); the prompt itself when the model answers nothing."""
        if not prompt or not prompt.strip():
            raise ValueError("the prompt to enhance is empty")
        try:
            return self.complete([Message("system", [ENHANCE_SYSTEM]), Message("user", [prompt.strip()])]).text.strip()
        except EmptyAnswer:
            return prompt.strip()
