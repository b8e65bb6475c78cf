"""Who is using the page. A server with credentials puts its own login page in front of the UI
(``ui.login``); the page session then carries the service principal the login resolved to —
a user, or an API key's own principal whatever name was typed beside it — and every handler
acts as that principal. Without credentials, everyone is the one local principal."""

from __future__ import annotations

import gradio as gr

from dreamloom.service.errors import Unauthenticated
from dreamloom.service.principals import LOCAL, Principal
from dreamloom.service.studio import Studio


def principal_of(studio: Studio, request: gr.Request | None) -> Principal:
    """The principal behind a page event; a gr.Error when its login is no longer valid."""
    if not studio.auth.required:
        return LOCAL
    name = getattr(request, "username", None) if request is not None else None
    try:
        if name is None:
            raise Unauthenticated("log in first")
        return studio.auth.known(name)
    except Unauthenticated as error:
        raise gr.Error(error.message) from None
