"""Prompt enhancement as a ``prepare_request`` hook: a request that asks for it has its prompt
rewritten by a vision-language model before anything is encoded, whichever front end sent
it, and keeps the prompt as written in ``enhanced_from`` (the infotext's "Enhanced from").
The engine knows only the callable; which model rewrites is the caller's choice."""

from __future__ import annotations

from collections.abc import Callable

from dreamloom.generate.lora_syntax import lora_tag, split_lora_tags
from dreamloom.generate.request import GenerationRequest

Enhance = Callable[[str], str]


class NoEnhancer(ValueError):
    """A request asked for enhancement where no model to enhance with is configured."""


def enhancement(enhance: Enhance) -> Callable[[GenerationRequest], GenerationRequest | None]:
    """The ``prepare_request`` hook that enhances with ``enhance``. LoRA tags stay as written:
    they name weights, not words for the model to rewrite."""

    def prepare_request(request: GenerationRequest) -> GenerationRequest | None:
        if not request.enhance or request.enhanced_from is not None:
            return None
        text, loras = split_lora_tags(request.prompt)
        rewritten = enhance(" ".join(text.split())).strip()
        if not rewritten:
            raise NoEnhancer("enhance: the vision model returned an empty prompt")
        prompt = " ".join([rewritten, *map(lora_tag, loras)])
        return request.model_copy(update={"prompt": prompt, "enhanced_from": request.prompt})

    return prepare_request


def check_enhanced(request: GenerationRequest) -> GenerationRequest:
    """``request`` once every enhancement it asked for happened (a clear error otherwise)."""
    if request.enhance and request.enhanced_from is None:
        raise NoEnhancer("enhance: no vision model is configured to enhance prompts here")
    return request
