"""Authorization codes once used, expired, or from before a password change, over real
HTTP on SQLite and PostgreSQL (H-07, H-14; `docs/decisions/codes-and-registration.md`).

RFC 6749 §4.1.2: on a second use the server "SHOULD revoke (when possible) all tokens
previously issued based on that authorization code". Only the code's own client,
authenticated as itself, before the code's expiry, may have that effect: any other
presentation of a used code is refused and changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_authorization_code import authorize_url, exchange, introspect, refresh

from conftest import Server, start_server
from keyturn.core.audit import EventType
from keyturn.settings import Settings
from keyturn.wiring import open_engine
from support.authorize import new_pkce, query_of, sign_in
from support.engine import PASSWORD
from support.token_endpoint import assert_error

CODE_TTL = 5
"""Seconds a code lives on this module's servers: long enough for a sign-in and an
exchange on a busy machine, short enough to wait out."""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from start_server(
        request, tmp_path_factory, {"KEYTURN_AUTHORIZATION_CODE_TTL": str(CODE_TTL)}
    )


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        yield client


def a_code(
    server: Server,
    http: httpx.Client,
    client_id: str,
    username: str = "alice",
    password: str = PASSWORD,
) -> tuple[str, str, float]:
    """A fresh code of `client_id` for `username`: `(code, verifier, issued_at)`, the
    last a monotonic time taken just before the sign-in."""
    pkce = new_pkce()
    params: dict[str, str | None] = {"client_id": client_id}
    if client_id == "web":
        params["redirect_uri"] = None  # its only one: the token request may omit it
    started = time.monotonic()
    answer = sign_in(http, authorize_url(server, pkce, **params), username, password)
    assert answer.status_code == 303, answer.text
    return query_of(answer.headers["location"])["code"], pkce.verifier, started


def exchange_as(server: Server, client_id: str, code: str, verifier: str) -> httpx.Response:
    """The token request for `code`, made by `client_id` authenticated as itself."""
    if client_id == "app":
        return exchange(server, code, verifier)
    return httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "code_verifier": verifier},
        auth=(client_id, server.secrets[client_id]),
        timeout=30,
    )


def wait_past_expiry(issued_at: float) -> None:
    time.sleep(max(0.0, issued_at + CODE_TTL + 1 - time.monotonic()))


def events(server: Server, *types: EventType) -> list[Any]:
    async def read() -> list[Any]:
        engine = await open_engine(Settings(**server.settings.model_dump()))
        try:
            found: list[Any] = []
            for t in types:
                found += await engine.admin.audit(type=t.value)
            return found
        finally:
            await engine.close()

    return asyncio.run(read())


def assert_session_lives(server: Server, client_id: str, issued: dict[str, Any]) -> None:
    assert introspect(server, issued["access_token"])["active"] is True
    rotated = (
        refresh(server, issued["refresh_token"], client_id)
        if client_id == "app"
        else (
            httpx.post(
                f"{server.base}/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
                auth=(client_id, server.secrets[client_id]),
                timeout=30,
            )
        )
    )
    assert rotated.status_code == 200, rotated.text


# H-07


def test_h07_another_client_presenting_a_used_code_ends_nothing(
    server: Server, http: httpx.Client
) -> None:
    code, verifier, _ = a_code(server, http, "app")
    issued = exchange_as(server, "app", code, verifier)
    assert issued.status_code == 200, issued.text
    before = events(server, EventType.REUSE_DETECTED)
    # `web` is authenticated, but the code is not its own (RFC 6749 §4.1.3).
    assert_error(exchange_as(server, "web", code, verifier), 400, "invalid_grant")
    assert events(server, EventType.REUSE_DETECTED) == before
    assert_session_lives(server, "app", issued.json())


def test_h07_own_client_within_the_bound_ends_the_session(
    server: Server, http: httpx.Client
) -> None:
    code, verifier, _ = a_code(server, http, "app")
    issued = exchange_as(server, "app", code, verifier).json()
    assert_error(exchange_as(server, "app", code, verifier), 400, "invalid_grant")
    assert introspect(server, issued["access_token"]) == {"active": False}
    assert_error(refresh(server, issued["refresh_token"]), 400, "invalid_grant")


@pytest.mark.parametrize("verifier", [None, "wrong-" + "v" * 50])
def test_h07_own_client_id_without_the_verifier_ends_nothing(
    server: Server, http: httpx.Client, verifier: str | None
) -> None:
    code, right, _ = a_code(server, http, "app")
    issued = exchange_as(server, "app", code, right)
    assert issued.status_code == 200, issued.text
    # A public client's id is no secret: whoever saw the code in passing can send it,
    # but not the PKCE verifier the real client (or a thief who redeemed it) holds.
    assert_error(exchange(server, code, verifier), 400, "invalid_grant")
    assert_session_lives(server, "app", issued.json())


def test_h07_own_client_after_the_bound_ends_nothing(server: Server, http: httpx.Client) -> None:
    code, verifier, issued_at = a_code(server, http, "web")
    issued = exchange_as(server, "web", code, verifier)
    assert issued.status_code == 200, issued.text
    wait_past_expiry(issued_at)
    assert_error(exchange_as(server, "web", code, verifier), 400, "invalid_grant")
    assert_session_lives(server, "web", issued.json())


def test_h07_an_expired_used_code_ends_nothing_and_records_nothing(
    server: Server, http: httpx.Client
) -> None:
    code, verifier, issued_at = a_code(server, http, "app")
    issued = exchange_as(server, "app", code, verifier)
    assert issued.status_code == 200, issued.text
    wait_past_expiry(issued_at)
    before = events(server, EventType.REUSE_DETECTED, EventType.AUTHORIZATION_CODE_REFUSED)
    # Days later, a leaked code in anyone's hands: the public client's id is no secret.
    for _ in range(3):
        assert_error(exchange_as(server, "app", code, verifier), 400, "invalid_grant")
        assert_error(exchange_as(server, "web", code, verifier), 400, "invalid_grant")
    after = events(server, EventType.REUSE_DETECTED, EventType.AUTHORIZATION_CODE_REFUSED)
    assert after == before
    assert_session_lives(server, "app", issued.json())


# H-14


def change_password(server: Server, username: str, new: str) -> None:
    async def change() -> None:
        engine = await open_engine(Settings(**server.settings.model_dump()))
        try:
            user = await engine.admin.user_named(username)
            await engine.sessions.change_password(user.id, PASSWORD, new, keep=None)
        finally:
            await engine.close()

    asyncio.run(change())


def test_h14_code_from_before_password_change_is_refused(
    server: Server, http: httpx.Client
) -> None:
    new = "a brand new passphrase for bob"
    code, verifier, _ = a_code(server, http, "app", username="bob")
    change_password(server, "bob", new)
    assert_error(exchange_as(server, "app", code, verifier), 400, "invalid_grant")
    refused = events(server, EventType.AUTHORIZATION_CODE_REFUSED)
    assert any(e.event.reason == "password_changed" for e in refused)
    # A code the new password signed in for is exchanged as ever.
    code, verifier, _ = a_code(server, http, "app", username="bob", password=new)
    assert exchange_as(server, "app", code, verifier).status_code == 200
