"""API keys (`Authorization: Bearer`) and HTTP basic auth (AUTOMATIC1111's ``--api-auth``).
The caller's identity is the job owner, so interrupt and listings stay within one caller."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets

from fastapi import HTTPException, Request

ANONYMOUS = ""


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer, Basic realm="dreamloom"'})


def caller(request: Request) -> str:
    """The authenticated caller (a user name, or ``key:<hash prefix>`` for an API key); raises 401
    when credentials are required and missing or wrong."""
    config = request.app.state.studio.config
    if not config.auth_required:
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and config.api_keys:
        if any(secrets.compare_digest(value.strip(), key) for key in config.api_keys):
            return "key:" + hashlib.sha256(value.strip().encode()).hexdigest()[:12]
        raise _unauthorized("invalid API key")
    if scheme.lower() == "basic" and config.users:
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized("malformed basic auth header") from None
        expected = config.users.get(user)
        if expected is not None and secrets.compare_digest(password, expected):
            return user
        raise _unauthorized("invalid user or password")
    raise _unauthorized("authentication required: send `Authorization: Bearer <key>` or HTTP basic auth")
