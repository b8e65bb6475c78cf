"""Text that arrives from outside: valid Unicode only. JSON can carry a lone surrogate
(``"\\ud800"``), which Python holds in a ``str`` but no encoder writes back out, so a request
holding one would be stored and then fail every response that shows it."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def valid_unicode(value: str) -> str:
    """``value`` itself; a ValueError naming the first character that is not valid Unicode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"is not valid Unicode: character {error.start} is a lone surrogate "
                         f"(U+{ord(value[error.start]):04X})") from None
    return value


#: A ``str`` field that refuses text no encoder can write back.
Text = Annotated[str, AfterValidator(valid_unicode)]
