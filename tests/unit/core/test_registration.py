"""The registration rules (core.registration, core.ids), pure: H-12, H-16, H-17."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from keyturn.core.ids import ClientId, is_user_id_shaped
from keyturn.core.models import (
    Client,
    ClientType,
    Delivery,
    GrantType,
    LifetimeOverrides,
    Lifetimes,
)
from keyturn.core.registration import (
    client_id_problem,
    origin_problem,
    registration_problem,
)

SERVER = Lifetimes(access_token_ttl=900, session_idle_ttl=3600, session_max_ttl=86400)
UUID = "0b5c6a2e-6f0e-4c39-9a51-8d8f1f7e4a10"
SPA = Client(
    id=ClientId("spa"),
    type=ClientType.PUBLIC,
    secret_hash=None,
    redirect_uris=(),
    grant_types=frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN}),
    scope=frozenset(),
    delivery=Delivery.COOKIE,
    audience=(),
    lifetimes=LifetimeOverrides(),
    enabled=True,
    created_at=datetime(2026, 6, 1, tzinfo=UTC),
    allowed_origins=("https://app.test",),
)


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.test",
        "https://app.test:8443",
        "https://a-b.c.example",
        "https://xn--bcher-kva.example",
        "https://192.0.2.1",
        "https://[2001:db8::1]:8443",
        "http://localhost",
        "http://localhost:8000",
        "http://127.0.0.1:5173",
        "http://[::1]:3000",
    ],
)
def test_h12_serialized_https_and_loopback_http_origins_are_allowed(origin: str) -> None:
    assert origin_problem(origin) is None


@pytest.mark.parametrize(
    ("origin", "why"),
    [
        ("null", "never null"),
        ("*", "never null or *"),
        ("", "scheme://host"),
        ("https://*.app.test", "scheme://host"),
        ("https://app.test/", "no trailing slash"),
        ("https://app.test/path", "no path"),
        ("https://app.test?x=1", "scheme://host"),
        ("https://app.test#f", "scheme://host"),
        ("HTTPS://app.test", "lower case"),
        ("https://App.test", "lower case"),
        ("https://user@app.test", "scheme://host"),
        (" https://app.test", "scheme://host"),
        ("https://app.test ", "scheme://host"),
        ("https://-app.test", "scheme://host"),
        ("https://app..test", "scheme://host"),
        ("https://app.test:0443", "scheme://host"),
        ("https://app.test:443", "default port"),
        ("http://localhost:80", "default port"),
        ("https://app.test:99999", "between 1 and 65535"),
        ("http://app.test", "only on localhost"),
        ("http://localhost.evil.test", "only on localhost"),
        ("http://127.0.0.2", "only on localhost"),
        ("http://10.0.0.1:8000", "only on localhost"),
        ("ws://localhost", "scheme://host"),
        ("file:///etc/passwd", "scheme://host"),
        ("app.test", "scheme://host"),
    ],
)
def test_h12_other_origins_are_refused_with_the_reason(origin: str, why: str) -> None:
    problem = origin_problem(origin)
    assert problem is not None
    assert why in problem


def test_h12_a_public_client_may_not_introspect() -> None:
    problem = registration_problem(replace(SPA, can_introspect=True), SERVER)
    assert problem is not None
    assert "only a confidential client may introspect" in problem
    confidential = replace(SPA, type=ClientType.CONFIDENTIAL, can_introspect=True)
    assert registration_problem(confidential, SERVER) is None


def test_h12_every_other_rule_of_a_registration() -> None:
    assert registration_problem(SPA, SERVER) is None
    cases = {
        "Allowed origin 'null' refused": replace(SPA, allowed_origins=("https://ok.test", "null")),
        "cannot use client_credentials": replace(
            SPA, grant_types=frozenset({GrantType.CLIENT_CREDENTIALS})
        ),
        "Redirect URI 'http://app.test/cb' refused": replace(
            SPA, redirect_uris=("http://app.test/cb",)
        ),
        "needs a redirect URI": replace(SPA, grant_types=frozenset({GrantType.AUTHORIZATION_CODE})),
        "Client id '' refused": replace(SPA, id=ClientId("")),
    }
    for words, client in cases.items():
        problem = registration_problem(client, SERVER)
        assert problem is not None
        assert words in problem


@pytest.mark.parametrize(
    "text",
    [UUID, UUID.upper(), UUID.replace("-", ""), "{" + UUID + "}", "urn:uuid:" + UUID],
)
def test_h16_a_uuid_in_any_spelling_is_user_shaped_and_no_client_id(text: str) -> None:
    assert is_user_id_shaped(text)
    problem = client_id_problem(text)
    assert problem is not None
    assert "may not be a UUID" in problem


@pytest.mark.parametrize("text", ["app", "svc-1", UUID[:-1], UUID + "x", "x" * 128, "kt_app"])
def test_h16_other_client_ids_are_not_user_shaped(text: str) -> None:
    assert not is_user_id_shaped(text)
    assert client_id_problem(text) is None


@pytest.mark.parametrize("text", ["", "x" * 129, "tab\there"])
def test_h16_client_ids_keep_their_length_and_printable_rule(text: str) -> None:
    assert client_id_problem(text) is not None


def test_h17_client_access_ttl_bounded_by_the_servers() -> None:
    at = replace(SPA, lifetimes=LifetimeOverrides(access_token_ttl=900))
    above = replace(SPA, lifetimes=LifetimeOverrides(access_token_ttl=901))
    assert registration_problem(at, SERVER) is None
    problem = registration_problem(above, SERVER)
    assert problem is not None
    assert "KEYTURN_ACCESS_TOKEN_TTL (900 s)" in problem


def test_h17_an_idle_lifetime_beyond_the_absolute_one_is_refused() -> None:
    client = replace(SPA, lifetimes=LifetimeOverrides(session_idle_ttl=90000))
    problem = registration_problem(client, SERVER)
    assert problem is not None
    assert "Lifetimes refused" in problem
