"""The page's login, in front of Gradio when the server requires credentials. Gradio's own
login stores whatever user name was typed as the identity; this one stores the principal the
service's authenticator resolved (so an API key logs in as the key's own principal), keeps
sessions server-side behind an http-only cookie, and hands Gradio that principal's id."""

from __future__ import annotations

import html
import secrets
from collections import OrderedDict
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dreamloom.service.errors import Unauthenticated
from dreamloom.service.studio import Studio

COOKIE = "dreamloom-session"
#: Most page sessions kept; the oldest log out first.
MAX_SESSIONS = 10_000

_FORM = """<!doctype html><html><head><meta charset="utf-8"><title>dreamloom: log in</title>
<style>body{{font-family:system-ui,sans-serif;display:flex;justify-content:center;margin-top:12vh}}
form{{display:flex;flex-direction:column;gap:.6em;min-width:18em}}input{{padding:.5em}}
.error{{color:#b91c1c}}</style></head><body><form method="post" action="login">
<h2>dreamloom</h2><p class="error" role="alert">{error}</p>
<label>username <input name="username" autocomplete="username"></label>
<label>password or API key <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Login</button></form></body></html>"""


class _LoginFirst:
    """ASGI middleware: a browser opening the page without a valid session goes to the login form."""

    def __init__(self, app: ASGIApp, valid: Callable[[str | None], bool]):
        self.app, self.valid = app, valid

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] == "GET":
            cookies = Request(scope).cookies
            if not self.valid(cookies.get(COOKIE)):
                await RedirectResponse("login", 303)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_login(app: FastAPI, studio: Studio) -> Callable[[Request], str | None]:
    """Add ``/login`` and ``/logout`` to ``app``; returns Gradio's ``auth_dependency``."""
    sessions: OrderedDict[str, str] = OrderedDict()

    def session_user(token: str | None) -> str | None:
        return sessions.get(token) if token else None

    @app.get("/login", include_in_schema=False)
    def login_form() -> HTMLResponse:
        return HTMLResponse(_FORM.format(error=""))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        try:
            principal = studio.auth.login(str(form.get("username", "")).strip(), str(form.get("password", "")))
        except Unauthenticated as error:
            return HTMLResponse(_FORM.format(error=html.escape("Incorrect credentials: " + error.message)), 400)
        token = secrets.token_urlsafe(24)
        sessions[token] = principal.id
        while len(sessions) > MAX_SESSIONS:
            sessions.popitem(last=False)
        response = RedirectResponse("./", 303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="lax")
        return response

    @app.get("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = RedirectResponse("login", 303)
        response.delete_cookie(COOKIE)
        return response

    app.add_middleware(_LoginFirst, valid=lambda token: session_user(token) is not None)
    return lambda request: session_user(request.cookies.get(COOKIE))
