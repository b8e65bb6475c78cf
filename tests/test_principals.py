"""Credentials to principals, and preferences per principal: the service's rules on their own,
without a server (the live-server tests in test_trust.py and test_ui.py check them through every
front end)."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from dreamloom.service.config import ServiceConfig
from dreamloom.service.errors import Forbidden, InvalidField, Unauthenticated
from dreamloom.service.preferences import PreferenceBook, Preferences
from dreamloom.service.principals import LOCAL, Authenticator, Principal, key_id


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator({"ann": "pw", "op": "op-pw"}, ["k-1", "k-2"], operators=["op", key_id("k-2")])


def test_each_credential_is_one_principal(auth):
    assert auth.header("Bearer k-1") == Principal(key_id("k-1"))
    assert auth.header("Bearer k-2") == Principal(key_id("k-2"), operator=True)
    assert auth.header(basic("ann", "pw")) == Principal("ann")
    assert auth.header(basic("op", "op-pw")).operator
    for bad in ("", "Bearer nope", basic("ann", "k-1"), basic("", "pw"), "Basic !!!", "Digest x"):
        with pytest.raises(Unauthenticated):
            auth.header(bad)


def test_credentials_in_any_unicode_are_compared_not_crashed_on():
    auth = Authenticator({"zoë": "pässwörd"}, ["clé-🔑"], operators=["zoë"])
    assert auth.header(basic("zoë", "pässwörd")).operator
    assert auth.header("Bearer clé-🔑") == Principal(key_id("clé-🔑"))
    for wrong in (basic("zoë", "passwörd"), "Bearer clé-🗝", "Bearer \ud800"):
        with pytest.raises(Unauthenticated):
            auth.header(wrong)
    assert auth.login("zoë", "pässwörd") == Principal("zoë", operator=True)


def test_a_page_login_with_a_key_is_the_keys_principal_whatever_the_name(auth):
    for name in ("ann", "op", " ", "", "key:whatever"):
        assert auth.login(name.strip(), "k-1") == Principal(key_id("k-1"))
    assert auth.login("ann", "pw") == Principal("ann")
    with pytest.raises(Unauthenticated):
        auth.login("ann", "wrong")
    assert auth.known("ann") == Principal("ann")
    assert auth.known(key_id("k-2")).operator
    for stale in ("", "bob", "key:000000000000"):
        with pytest.raises(Unauthenticated):
            auth.known(stale)


def test_user_names_and_operators_are_checked_at_start():
    for name in ("", " ann", "ann ", "a:b"):
        with pytest.raises(ValueError, match="user name"):
            Authenticator({name: "pw"})
    with pytest.raises(ValueError, match="operators"):
        Authenticator({"ann": "pw"}, operators=["bob"])
    assert Authenticator().anonymous() == LOCAL and LOCAL.operator
    with pytest.raises(ValidationError, match="neither users nor API key ids"):  # before any server starts
        ServiceConfig(users={"ann": "pw"}, operators=["bob"])
    assert ServiceConfig(api_keys=["k"], operators=[key_id("k")]).authenticator().key("k").operator


def test_preferences_are_the_servers_for_the_operator_and_ones_own_for_anyone_else():
    book = PreferenceBook(Preferences())
    ann, bob, op = Principal("ann"), Principal("bob"), Principal("op", operator=True)
    book.update(ann, {"model": "random-sd", "clip_skip": 2}, server_wide=False)
    assert book.of(ann).model == "random-sd" and book.of(ann).clip_skip == 2
    assert book.of(bob) == Preferences()
    with pytest.raises(Forbidden):
        book.update(bob, {"model": "random-sd"}, server_wide=True)
    with pytest.raises(InvalidField) as refused:
        book.update(bob, {"clip_skip": 13}, server_wide=False)
    assert refused.value.problems[0].loc == ("clip_skip",)
    book.update(op, {"clip_skip": 3}, server_wide=True)
    assert book.of(bob).clip_skip == 3 and book.of(ann).clip_skip == 2  # ann's own choice stays hers
