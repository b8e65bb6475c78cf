"""The service's domain errors as HTTP answers, translated here once: a refused field is a 422
in FastAPI's validation shape (``detail`` lists each field's location), so clients see one
shape whether pydantic or the service refused the request."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dreamloom.service.errors import (Busy, Forbidden, InvalidField, NotFound, ServiceError, Unauthenticated,
                                      Unavailable)

_STATUS = {InvalidField: 422, NotFound: 404, Forbidden: 403, Unauthenticated: 401, Busy: 429, Unavailable: 502}
_CHALLENGE = {"WWW-Authenticate": 'Bearer, Basic realm="dreamloom"'}


def to_http(error: ServiceError) -> HTTPException:
    """``error`` as the HTTP exception FastAPI answers with."""
    status = next((code for kind, code in _STATUS.items() if isinstance(error, kind)), 400)
    if isinstance(error, InvalidField):
        detail = [{"loc": ["body", *problem.loc], "msg": problem.msg, "type": problem.type}
                  for problem in error.problems]
        return HTTPException(status, _safe(detail))
    return HTTPException(status, _safe(error.message), headers=_CHALLENGE if status == 401 else None)


def _safe(value: Any) -> Any:
    """``value`` as JSON can carry it: a number that is not finite, or text that is not valid
    Unicode (both of which a client can send), becomes its ``repr``."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode()
        return value
    if isinstance(value, dict):
        return {_safe(key): _safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(item) for item in value]
    return value


def install(app: FastAPI) -> None:
    """Answer every ``ServiceError`` a handler lets through as ``to_http`` says, and pydantic's
    refusals in FastAPI's shape with their input made safe to send (FastAPI's own handler
    fails, a 500, on a NaN or a lone surrogate it was sent)."""

    async def handle(request: Request, error: ServiceError) -> JSONResponse:
        http = to_http(error)
        return JSONResponse({"detail": http.detail}, http.status_code, http.headers)

    async def refuse(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _safe(jsonable_encoder(error.errors()))}, 422)

    app.add_exception_handler(ServiceError, handle)
    app.add_exception_handler(RequestValidationError, refuse)
