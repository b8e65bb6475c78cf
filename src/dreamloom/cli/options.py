"""Derive typer options from pydantic models, so a field's default, limits and help live in one place.

``with_model_options(Model)`` adds one ``--field-name`` option per field of ``Model`` to a
command and hands the command the values as one dict, ready for ``Model(**values)``. A field
that holds a model (``ServerConfig.limits``) is offered field by field (``--max-steps``); a
field the command line spells differently (``--auth USER:PASS`` for the ``users`` dict) is
declared with ``Renamed``. When the command builds the model and pydantic refuses a value,
the error names the option the user typed, not the field.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import typer
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from dreamloom.config import Settings
from dreamloom.errors import field_message

#: The Settings the engine commands (generate, serve) offer; the outputs folder is each command's own.
ENGINE_SETTINGS = ("models_dir", "device", "dtype", "allow_pickle", "allow_hub")


@dataclass(frozen=True)
class Renamed:
    """A model field that the command line offers under another name or in another shape.

    Args:
        option: the option's name, e.g. ``--api-key``.
        annotation: the option's type as typer parses it, e.g. ``list[str] | None``.
        help: the option's help; default: the field's description.
        metavar: how the help shows the value, e.g. ``USER:PASS``.
        envvar: an environment variable typer reads when the option is not given.
        convert: turns the option's value into the field's (``["a:b"]`` -> ``{"a": "b"}``).
    """

    option: str
    annotation: Any
    help: str | None = None
    metavar: str | None = None
    envvar: str | None = None
    convert: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class _Option:
    """One generated option: where its value goes in the model (``("limits", "max_steps")``)."""

    path: tuple[str, ...]
    flag: str
    parameter: inspect.Parameter
    convert: Callable[[Any], Any] | None = None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _range(field: FieldInfo) -> str:
    """The field's bounds for its help (`` Range: at least 1, at most 150.``), so the help shows
    the limit the model enforces; click's own ``[x>=1]`` would be read as rich markup."""
    words = {Ge: "at least {0.ge}", Gt: "above {0.gt}", Le: "at most {0.le}", Lt: "below {0.lt}"}
    bounds = [words[type(bound)].format(bound) for bound in field.metadata if type(bound) in words]
    return f" Range: {', '.join(bounds)}." if bounds else ""


def _field_option(path: tuple[str, ...], field: FieldInfo, unset: bool) -> _Option:
    """The option for one model field; with ``unset``, it defaults to None (not given)."""
    if field.is_required() and not unset:
        raise TypeError(f"{'.'.join(path)} is required: skip it and take it as the command's argument")
    default = None if unset else field.get_default(call_default_factory=True)
    annotation = field.annotation | None if unset else field.annotation
    option = typer.Option(default, help=(field.description or "") + _range(field), show_default=default is not None)
    return _Option(path, _flag(path[-1]), inspect.Parameter(path[-1], inspect.Parameter.KEYWORD_ONLY,
                                                            default=option, annotation=annotation))


def _renamed_option(name: str, field: FieldInfo, renamed: Renamed) -> _Option:
    option = typer.Option(None, renamed.option, help=renamed.help or field.description, metavar=renamed.metavar,
                          envvar=renamed.envvar, show_default=False)
    parameter_name = renamed.option.lstrip("-").replace("-", "_")
    return _Option((name,), renamed.option, inspect.Parameter(parameter_name, inspect.Parameter.KEYWORD_ONLY,
                                                               default=option, annotation=renamed.annotation),
                   renamed.convert)


def _options(model: type[BaseModel], skip: Collection[str], renamed: Mapping[str, Renamed], unset: bool,
             prefix: tuple[str, ...] = ()) -> list[_Option]:
    """Every option of ``model``, a nested model's fields in its place."""
    options = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        if name in renamed:
            options.append(_renamed_option(name, field, renamed[name]))
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            options += _options(field.annotation, skip, renamed, unset, (*prefix, name))
        else:
            options.append(_field_option((*prefix, name), field, unset))
    return options


def _put(values: dict, path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        values = values.setdefault(part, {})
    values[path[-1]] = value


def _option_for(field: str, options: list[_Option]) -> str | None:
    """The option behind the dotted ``field`` pydantic names (``loras.0.weight`` is ``--lora``'s)."""
    parts = tuple(field.split("."))
    return next((o.flag for o in options if parts[:len(o.path)] == o.path), None)


def with_model_options(model: type[BaseModel], skip: Collection[str] = (), *, only: Collection[str] | None = None,
                       into: str = "values", renamed: Mapping[str, Renamed] | None = None,
                       unset: bool = False) -> Callable:
    """Decorate a command so it offers ``model``'s fields as options and receives them as one dict.

    Args:
        model: the pydantic model whose fields become options.
        skip: fields the command does not offer (or takes as its own arguments).
        only: the fields the command offers, where that list is the shorter one.
        into: the command's parameter that receives the dict; decorators for several models stack.
        renamed: fields offered under another name or shape (see ``Renamed``).
        unset: every option defaults to None (not given), so the model's own defaults (or the
            environment, for ``Settings.from_env``) apply. Options left at None are never in the dict.

    A ``ValidationError`` the command raises about one of these fields becomes a ``ValueError``
    naming the option: ``--steps: Input should be greater than or equal to 1``.
    """
    if only is not None:
        skip = set(model.model_fields) - set(only)
    options = _options(model, set(skip), renamed or {}, unset)

    def decorate(fn: Callable) -> Callable:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.name != into]
        params = own + [o.parameter for o in options]
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise TypeError(f"{fn.__name__}: two options share a name in {names}")

        def wrapper(**kwargs):
            values: dict[str, Any] = {}
            for option in options:
                value = kwargs.pop(option.parameter.name)
                if value is None:  # not given (no option sets None): the model's default applies
                    continue
                _put(values, option.path, option.convert(value) if option.convert else value)
            try:
                return fn(**kwargs, **{into: values})
            except ValidationError as error:
                field, message = field_message(error)
                flag = _option_for(field, options)
                if flag is None:
                    raise
                raise ValueError(f"{flag}: {message}") from None

        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__doc__ = fn.__doc__
        wrapper.__name__ = fn.__name__
        return wrapper

    return decorate


def with_settings_options(*fields: str) -> Callable:
    """Offer ``Settings``' ``fields`` as options, given to the command as ``settings: dict``;
    an option not given leaves the field to ``$DREAMLOOM_*`` and then Settings' default, so
    pass the dict to ``Settings.from_env``."""
    return with_model_options(Settings, only=fields, into="settings", unset=True)
