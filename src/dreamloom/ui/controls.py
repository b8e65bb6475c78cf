"""Form controls built from the pydantic request models the API validates with, so a slider's
range, a control's default and its help text are defined once (in the model) and the UI can
never offer what the API would refuse. A server limit narrows a range further."""

from __future__ import annotations

from typing import Any

import annotated_types
import gradio as gr
from pydantic import BaseModel
from pydantic.fields import FieldInfo


def _field(model: type[BaseModel], name: str) -> FieldInfo:
    return model.model_fields[name]


def bounds(model: type[BaseModel], name: str) -> tuple[float | None, float | None]:
    """The inclusive lower and upper bound the model puts on a numeric field (None: unbounded)."""
    low = high = None
    for rule in _field(model, name).metadata:
        if isinstance(rule, annotated_types.Ge):
            low = rule.ge
        elif isinstance(rule, annotated_types.Gt):
            low = rule.gt
        elif isinstance(rule, annotated_types.Le):
            high = rule.le
        elif isinstance(rule, annotated_types.Lt):
            high = rule.lt
    return low, high


def default(model: type[BaseModel], name: str) -> Any:
    """The field's default; None for a required field."""
    field = _field(model, name)
    return None if field.is_required() else field.get_default(call_default_factory=True)


def help_text(model: type[BaseModel], name: str) -> str | None:
    return _field(model, name).description


def slider(model: type[BaseModel], name: str, label: str, *, step: float = 1, limit: float | None = None,
           value: float | None = None, minimum: float | None = None, **kwargs) -> gr.Slider:
    """A slider over the field's range (its upper end lowered to ``limit``, a server limit)."""
    low, high = bounds(model, name)
    low = minimum if minimum is not None else low
    if limit is not None:
        high = limit if high is None else min(high, limit)
    start = value if value is not None else default(model, name)
    return gr.Slider(low, high, value=start, step=step, label=label, info=help_text(model, name),
                     elem_id=kwargs.pop("elem_id", None), **kwargs)


def number(model: type[BaseModel], name: str, label: str, **kwargs) -> gr.Number:
    """A number box with the field's bounds; integers for integer fields."""
    low, high = bounds(model, name)
    integer = _field(model, name).annotation is int
    return gr.Number(value=default(model, name), minimum=low, maximum=high, precision=0 if integer else None,
                     label=label, info=help_text(model, name), **kwargs)


def textbox(model: type[BaseModel], name: str, label: str, **kwargs) -> gr.Textbox:
    return gr.Textbox(value=default(model, name) or "", label=label, info=kwargs.pop("info", help_text(model, name)),
                      **kwargs)


def checkbox(model: type[BaseModel], name: str, label: str, **kwargs) -> gr.Checkbox:
    return gr.Checkbox(value=bool(default(model, name)), label=label, info=help_text(model, name), **kwargs)


def choices(model: type[BaseModel], name: str, label: str, options: list[str], **kwargs) -> gr.Dropdown:
    value = kwargs.pop("value", default(model, name))
    return gr.Dropdown(options, value=value if value in options else (options[0] if options else None),
                       label=label, info=help_text(model, name), **kwargs)
