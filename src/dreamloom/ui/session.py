"""Who is using the page: the UI's login accepts the server's basic-auth users, and any user
name with an API key as the password, and the login name owns the jobs the page submits
(as the API's caller owns its jobs)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import gradio as gr

from dreamloom.server.auth import ANONYMOUS
from dreamloom.server.config import ServerConfig


def owner_of(request: gr.Request | None) -> str:
    return (getattr(request, "username", None) or ANONYMOUS) if request is not None else ANONYMOUS


def login_check(config: ServerConfig) -> Callable[[str, str], bool] | None:
    """Gradio's ``auth`` callable for this server, or None when the server needs no credentials."""
    if not config.auth_required:
        return None

    def check(user: str, password: str) -> bool:
        expected = config.users.get(user)
        if expected is not None and secrets.compare_digest(password, expected):
            return True
        return any(secrets.compare_digest(password, key) for key in config.api_keys)

    return check
