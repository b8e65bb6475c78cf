"""The stages of a generation run and the hooks that attach to them, each declared once.

A run goes through seven stages, in order::

    prepare_request -> encode_prompts -> prepare_conditioning -> on_step -> decode -> post_process -> save

and whatever a feature adds (ControlNet, a hires pass, a script, a step cache) attaches at one
of them, so it works the same for txt2img, img2img and inpaint, alone or batched. As in pluggy
(and datasette's ``hookspecs.py``), every hook is declared once below as a spec with named
arguments; an implementation takes any subset of those names, by name, and is checked against
the spec when it is registered, never at run time. A hook that returns None leaves the value as
it was; one that returns a value replaces it for the hooks after it (``decode``: the first
value wins). The engine's own features use the same seam: inpaint's latent blend is an
``on_step`` hook and its paste-back a ``post_process`` hook.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Stage(str, Enum):
    """The named stages of a run, in the order they happen."""

    prepare_request = "prepare_request"
    encode_prompts = "encode_prompts"
    prepare_conditioning = "prepare_conditioning"
    on_step = "on_step"
    decode = "decode"
    post_process = "post_process"
    save = "save"


@dataclass(frozen=True)
class HookSpec:
    """One stage's hook: the arguments an implementation may take, by name, what it returns, and
    what it is for."""

    stage: Stage
    arguments: tuple[str, ...]
    returns: str
    doc: str
    first_result: bool = False  # the first non-None result wins and the rest are not called


#: Every hook, declared once.
SPECS: dict[Stage, HookSpec] = {
    s.stage: s
    for s in (
        HookSpec(Stage.prepare_request, ("request", "mode"), "GenerationRequest | None",
                 "Before anything runs. ``request``: the GenerationRequest; ``mode``: 'txt2img', 'img2img' or "
                 "'inpaint'. Return a changed request (a script's prompt edit, say)."),
        HookSpec(Stage.encode_prompts, ("pipeline", "request", "embeddings"), "dict[str, Tensor] | None",
                 "After the prompts are encoded. ``embeddings``: the pipeline's prompt_embeds and "
                 "negative_prompt_embeds (SDXL: and the pooled ones) keyword arguments, batch 1."),
        HookSpec(Stage.prepare_conditioning, ("pipeline", "request", "arguments", "seeds", "batch"), "dict | None",
                 "Before each batch's pipeline call. ``arguments``: the request's keyword arguments of the call "
                 "besides prompts and noise (width/height, image, strength, mask_image); ``seeds``: the batch's "
                 "seeds; ``batch``: its index among the request's n_iter batches."),
        HookSpec(Stage.on_step, ("pipeline", "request", "step", "total", "timestep", "latents", "seeds", "batch"),
                 "Tensor | None",
                 "After each denoising step (diffusers' callback_on_step_end). ``step``: steps done (1-based) "
                 "of ``total``; ``latents``: this request's rows only. Return latents to replace them."),
        HookSpec(Stage.decode, ("pipeline", "request", "latents", "seeds", "batch"), "list[Image] | None",
                 "Instead of the VAE decode of a batch (tiled VAE, TAESD, a hires pass): return its images, one "
                 "per seed.", first_result=True),
        HookSpec(Stage.post_process, ("pipeline", "request", "images", "seeds", "batch"), "list[Image] | None",
                 "After decode. ``images``: the batch's images. Return images to replace them."),
        HookSpec(Stage.save, ("request", "image", "seed", "infotext", "path"), "str | None",
                 "Before a PNG is written (``Engine.save``). ``infotext``: its parameters text; ``path``: where "
                 "it goes. Return an infotext to write instead."),
    )
}


class HookError(TypeError):
    """Raised at registration for a hook whose arguments are not in its stage's spec."""


@dataclass(frozen=True)
class _Impl:
    function: Callable[..., Any]
    arguments: tuple[str, ...]


class StageHooks:
    """The hooks registered at each stage, called in the order they were added."""

    def __init__(self) -> None:
        self._impls: dict[Stage, list[_Impl]] = {stage: [] for stage in Stage}

    def add(self, stage: Stage | str, function: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``function`` at ``stage``; its parameters must be names of that stage's spec."""
        spec = SPECS[Stage(stage)]
        names = tuple(inspect.signature(function).parameters)
        unknown = [name for name in names if name not in spec.arguments]
        if unknown:
            raise HookError(f"{getattr(function, '__qualname__', function)!r} takes {unknown} which the "
                            f"{spec.stage.value} hook does not pass; it passes {list(spec.arguments)}")
        self._impls[spec.stage].append(_Impl(function, names))
        return function

    def on(self, stage: Stage | str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """``add`` as a decorator: ``@hooks.on(Stage.on_step)``."""
        return lambda function: self.add(stage, function)

    def __bool__(self) -> bool:
        return any(self._impls.values())

    def has(self, stage: Stage) -> bool:
        return bool(self._impls[stage])

    def __add__(self, other: StageHooks) -> StageHooks:
        """These hooks, then ``other``'s, at every stage."""
        both = StageHooks()
        for stage in Stage:
            both._impls[stage] = [*self._impls[stage], *other._impls[stage]]
        return both

    def chain(self, stage: Stage, value_name: str, **arguments: Any) -> Any:
        """Pass ``arguments[value_name]`` through every hook at ``stage``, each seeing the value the
        previous returned; the final value."""
        _check(stage, arguments)
        for impl in self._impls[stage]:
            result = impl.function(**{name: arguments[name] for name in impl.arguments})
            if result is not None:
                arguments[value_name] = result
        return arguments[value_name]

    def first(self, stage: Stage, **arguments: Any) -> Any:
        """The first non-None result of the hooks at ``stage`` (a ``first_result`` spec), else None."""
        _check(stage, arguments)
        for impl in self._impls[stage]:
            result = impl.function(**{name: arguments[name] for name in impl.arguments})
            if result is not None:
                return result
        return None


def _check(stage: Stage, arguments: dict[str, Any]) -> None:
    """The engine passes exactly the spec's arguments: a spec is a promise to every hook."""
    if set(arguments) != set(SPECS[stage].arguments):
        raise HookError(f"the {stage.value} hook was called with {sorted(arguments)}, "
                        f"its spec says {list(SPECS[stage].arguments)}")
