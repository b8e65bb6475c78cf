"""Who is asking. Every credential identifies exactly one principal: a basic-auth user is
that user, an API key is its own principal (``key:<hash prefix>``, never a name the caller
chose), and a server without credentials has one principal, its operator. Jobs are owned
by the principal's ``id``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass

from dreamloom.service.errors import Unauthenticated

#: The owner id of a server that requires no credentials (and of the local command line).
LOCAL_ID = ""
KEY_PREFIX = "key:"


@dataclass(frozen=True)
class Principal:
    """``id`` owns jobs; ``operator`` may change the server-wide settings."""

    id: str
    operator: bool = False

    @property
    def label(self) -> str:
        return self.id or "local"


#: The command line's principal, and everyone's on a server without credentials: the person
#: who started it, who is its operator.
LOCAL = Principal(LOCAL_ID, operator=True)


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of two secrets, any Unicode in them (``compare_digest`` takes only
    ASCII ``str``, so both are compared as UTF-8 bytes)."""
    return secrets.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def key_id(key: str) -> str:
    """An API key's principal id: a prefix of its SHA-256, so logs and job records never hold the key."""
    return KEY_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:12]


def check_user_name(name: str) -> str:
    """A basic-auth user name as a principal id: not empty, no surrounding space, and no ':'
    (which would end it inside a basic-auth header, and which only API keys' ids carry)."""
    if not name or name != name.strip() or ":" in name:
        raise ValueError(f"user name {name!r}: give a non-empty name without spaces around it or ':'")
    return name


class Authenticator:
    """Turns credentials into principals. ``operators`` are the user names (or API-key ids)
    allowed to change server-wide settings; without any credentials configured, everyone is
    the one local principal, who is the operator."""

    def __init__(self, users: dict[str, str] | None = None, api_keys: list[str] | None = None,
                 operators: list[str] | None = None):
        self.users = {check_user_name(name): password for name, password in (users or {}).items()}
        self.api_keys = [key for key in api_keys or [] if key]
        self.operators = set(operators or [])
        unknown = self.operators - set(self.users) - {key_id(key) for key in self.api_keys}
        if unknown:
            raise ValueError(f"operators {sorted(unknown)} are neither users nor API key ids")

    @property
    def required(self) -> bool:
        return bool(self.users or self.api_keys)

    def anonymous(self) -> Principal:
        """The principal of a caller who sent no credentials (only a server that needs none accepts one)."""
        if self.required:
            raise Unauthenticated("authentication required: send `Authorization: Bearer <key>` or HTTP basic auth")
        return LOCAL

    def _principal(self, id: str) -> Principal:
        return Principal(id, operator=id in self.operators)

    def key(self, key: str) -> Principal:
        key = key.strip()
        if key and any(_same(key, known) for known in self.api_keys):
            return self._principal(key_id(key))
        raise Unauthenticated("invalid API key")

    def password(self, user: str, password: str) -> Principal:
        expected = self.users.get(user)
        if expected is not None and _same(password, expected):
            return self._principal(user)
        raise Unauthenticated("invalid user or password")

    def login(self, user: str, password: str) -> Principal:
        """The web page's login: a user with their password, or an API key as the password; a
        key logs in as the key's own principal whatever name was typed beside it."""
        if not self.required:
            return LOCAL
        for attempt in (lambda: self.password(user, password), lambda: self.key(password)):
            try:
                return attempt()
            except Unauthenticated:
                pass
        raise Unauthenticated("incorrect user name or password (or API key)")

    def header(self, authorization: str) -> Principal:
        """The principal an HTTP ``Authorization`` header names (Bearer key or Basic user)."""
        if not self.required:
            return LOCAL
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.api_keys:
            return self.key(value)
        if scheme.lower() == "basic" and self.users:
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthenticated("malformed basic auth header") from None
            return self.password(user, password)
        return self.anonymous()

    def known(self, id: str) -> Principal:
        """The principal of a page session's stored id (set by ``login``)."""
        if id in self.users or any(id == key_id(key) for key in self.api_keys):
            return self._principal(id)
        if not self.required and id == LOCAL_ID:
            return LOCAL
        raise Unauthenticated("this session's login is no longer valid; log in again")
