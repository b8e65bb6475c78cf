"""The service's domain errors as HTTP answers, translated here once: a refused field is a 422
in FastAPI's validation shape (``detail`` lists each field's location), so clients see one
shape whether pydantic or the service refused the request."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
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
        return HTTPException(status, detail)
    return HTTPException(status, error.message, headers=_CHALLENGE if status == 401 else None)


def install(app: FastAPI) -> None:
    """Answer every ``ServiceError`` a handler lets through as ``to_http`` says."""

    async def handle(request: Request, error: ServiceError) -> JSONResponse:
        http = to_http(error)
        return JSONResponse({"detail": http.detail}, http.status_code, http.headers)

    app.add_exception_handler(ServiceError, handle)
