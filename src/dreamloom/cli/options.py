"""Derive typer options from a pydantic request model, so limits and help live in one place."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import typer
from pydantic import BaseModel


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def with_model_options(model: type[BaseModel], skip: set[str]) -> Callable:
    """Decorate ``fn(values: dict, **own)`` so the CLI shows one option per model field.

    The wrapped function receives the fields the user set, and its own parameters."""

    def decorate(fn: Callable) -> Callable:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in list(inspect.signature(fn).parameters.values())[1:]]
        fields = {k: f for k, f in model.model_fields.items() if k not in skip}
        params = []
        for name, field in fields.items():
            params.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=typer.Option(field.default, _option_name(name), help=field.description, show_default=field.default is not None),
                    annotation=field.annotation,
                )
            )

        def wrapper(**kwargs: Any):
            values = {k: kwargs.pop(k) for k in fields}
            return fn(values, **kwargs)

        wrapper.__signature__ = inspect.Signature(own + params)
        wrapper.__doc__ = fn.__doc__
        wrapper.__name__ = fn.__name__
        return wrapper

    return decorate
