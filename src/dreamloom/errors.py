"""One way to say what pydantic refused: the field, dotted, and pydantic's message.

The CLI, the web UI, the server and the config loaders all report a refused value as
``field: message``; they share this formatter so the wording is the same on every front
end, and each front end only decides how to spell the field (``--max-steps``, ``lora.rank``).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError
from pydantic_core import ErrorDetails

#: What pydantic puts before the text of an exception raised in a validator.
_PREFIXES = ("Value error, ", "Assertion failed, ")


def message_of(detail: ErrorDetails, messages: Mapping[str, str] | None = None) -> str:
    """The message of one of pydantic's errors (an item of ``error.errors()``).

    Args:
        detail: the error.
        messages: replacement messages by pydantic error type, e.g.
            ``{"extra_forbidden": "unknown config key"}`` where the front end knows better words.

    pydantic's "Value error, " prefix (put before an exception raised in a validator) says
    nothing to a user and is dropped.
    """
    message = (messages or {}).get(detail["type"]) or detail["msg"]
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    return message


def field_message(error: ValidationError, messages: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The first error of ``error`` as (dotted field, message); the field is ``""`` when a model
    validator refused the object as a whole. ``messages`` as for ``message_of``."""
    first = error.errors()[0]
    return ".".join(str(part) for part in first["loc"]), message_of(first, messages)


def one_line(error: ValidationError, whole: str = "request", messages: Mapping[str, str] | None = None) -> str:
    """``field: message`` for the first error; ``whole`` names the field when the object as a
    whole was refused (``request``, ``config``)."""
    field, message = field_message(error, messages)
    return f"{field or whole}: {message}"
