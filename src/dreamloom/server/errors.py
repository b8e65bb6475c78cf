"""Errors as FastAPI reports validation errors (422, ``detail`` lists the field), so clients
see one shape whether pydantic or a server limit refused the request."""

from __future__ import annotations

from fastapi import HTTPException


def field_error(field: str | tuple, message: str, status: int = 422) -> HTTPException:
    loc = ["body", *(field if isinstance(field, tuple) else (field,))]
    return HTTPException(status, [{"loc": loc, "msg": message, "type": "value_error"}])
