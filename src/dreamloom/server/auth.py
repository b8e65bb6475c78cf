"""Who is calling, for every route: API keys (`Authorization: Bearer`) and HTTP basic auth
(AUTOMATIC1111's ``--api-auth``) turned into the service's principal, and the studio the
app was built with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from dreamloom.service.principals import Principal
from dreamloom.service.studio import Studio


def studio_of(request: Request) -> Studio:
    return request.app.state.studio


def caller(request: Request) -> Principal:
    """The authenticated caller; ``Unauthenticated`` (a 401) when credentials are required and missing or wrong."""
    return studio_of(request).auth.header(request.headers.get("authorization", ""))


Caller = Annotated[Principal, Depends(caller)]
StudioDep = Annotated[Studio, Depends(studio_of)]
