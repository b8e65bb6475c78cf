"""The service's refusals, one type per kind of answer, so that each front end translates
them in one place (HTTP status, Gradio message, CLI exit code) and none needs to know the
others' vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from dreamloom.errors import message_of

Loc = tuple[str | int, ...]


class ServiceError(Exception):
    """Something the caller asked for that the service refuses, with a one-line reason."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (``loc``, the field's path) and what."""

    loc: Loc
    msg: str
    type: str = "value_error"

    def __str__(self) -> str:
        where = ".".join(str(part) for part in self.loc)
        return f"{where}: {self.msg}" if where else self.msg


class InvalidField(ServiceError):
    """The request is wrong: each problem names its field."""

    def __init__(self, field: str | Loc, message: str | None = None, problems: list[Problem] | None = None):
        loc = field if isinstance(field, tuple) else (field,)
        self.problems = problems or [Problem(loc, message or "invalid value")]
        super().__init__(str(self.problems[0]))

    @classmethod
    def from_validation(cls, error: ValidationError, rename: dict[str, Loc] | None = None) -> InvalidField:
        """pydantic's errors as problems; ``rename`` maps a model field to where the caller's
        protocol put it (an AUTOMATIC1111 field name, say)."""
        problems = []
        for item in error.errors():
            loc = tuple(item["loc"])
            if rename and loc and loc[0] in rename:
                loc = rename[loc[0]] + loc[1:]
            problems.append(Problem(loc, message_of(item), item["type"]))
        return cls(problems[0].loc if problems else (), problems=problems or None)


class NotFound(ServiceError):
    """No such thing for this caller (another principal's job is not theirs to see, so it is
    answered exactly like one that does not exist)."""


class Forbidden(ServiceError):
    """The caller is known but may not do this (a server-wide setting of the operator's)."""


class Unauthenticated(ServiceError):
    """Credentials are required and missing or wrong."""


class Busy(ServiceError):
    """The queue is full; try again later."""


class Unavailable(ServiceError):
    """Something the service relies on failed (a remote endpoint did not answer)."""
