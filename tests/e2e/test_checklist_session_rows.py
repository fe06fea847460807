"""The first-party API over real HTTP, for checklist rows that need more than a status:
logout without any token (SL-02), logout everywhere across clients and users (SL-03),
a cross-site login (CK-04), simple content types at refresh and logout (CK-06), a
refresh token in the URL and the server's log (CK-10), the end of an account lockout
(RL-01).

The module's own server, on each store, writes its log to a file the tests read; it
believes `X-Forwarded-For` from loopback (so rotated addresses are real addresses to
it), locks an account for 6 seconds (the window RL-01 waits out) and allows 600 logins
a minute per address (the tests log in often from one address; that limit is not what
they test).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ORIGIN, SECRET, Server, _seed
from keyturn.settings import Settings
from keyturn.storage import upgrade
from keyturn.wiring import open_engine
from support.databases import create_pg_schema, drop_pg_schema
from support.engine import PASSWORD
from support.server import running_server
from support.token_endpoint import assert_error

LOCKOUT_SECONDS = 6
COOKIE = "__Host-keyturn_rt_spa"
CSRF = {"X-Keyturn-CSRF": "1", "Origin": ORIGIN}


@dataclass(frozen=True)
class Logged:
    server: Server
    log: Path

    def access_lines(self) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [r for r in records if r["logger"] == "keyturn.access"]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def logged(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Logged]:
    env = {
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_GRACE_SECONDS": "10",
        "KEYTURN_LOGIN_LOCKOUT_SECONDS": str(LOCKOUT_SECONDS),
        "KEYTURN_TRUSTED_PROXIES": "127.0.0.1",
        "KEYTURN_LOGIN_REQUESTS_PER_MINUTE": "600",
    }
    workdir = tmp_path_factory.mktemp("rows")
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'keyturn.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_url")
        schema = create_pg_schema(url)
        env["KEYTURN_DB_SCHEMA"] = schema
    env["KEYTURN_DATABASE_URL"] = url
    settings = Settings(database_url=url, secret_key=SECRET, db_schema=schema)
    client_secrets = asyncio.run(_seed(settings))
    log = workdir / "server.log"
    with running_server(env, log_path=log) as base:
        yield Logged(Server(base, settings, client_secrets), log)
    if schema:
        drop_pg_schema(url, schema)


@pytest.fixture
def server(logged: Logged) -> Server:
    return logged.server


# Helpers


def post(server: Server, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.base}{path}", json=body, timeout=30, **kwargs)


def login(
    server: Server, username: str, client_id: str = "native", **headers: str
) -> httpx.Response:
    body: dict[str, Any] = {"username": username, "password": PASSWORD, "client_id": client_id}
    if client_id in server.secrets:
        body["client_secret"] = server.secrets[client_id]
    if client_id == "spa":
        headers = {**CSRF, **headers}
    return post(server, "/auth/login", body, headers=headers)


def cookie_of(response: httpx.Response) -> str:
    match = re.search(rf"{COOKIE}=([^;]*)", response.headers["set-cookie"])
    assert match is not None
    return match.group(1)


def with_cookie(value: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}", **headers}


async def _add_users(server: Server, names: list[str]) -> None:
    engine = await open_engine(server.settings)
    try:
        for name in names:
            await engine.admin.add_user(name, PASSWORD)
    finally:
        await engine.close()


def new_users(server: Server, *roles: str) -> list[str]:
    """Users of this test alone, named after the roles they play."""
    names = [f"{role}-{secrets.token_hex(3)}" for role in roles]
    asyncio.run(_add_users(server, names))
    return names


State = dict[str, tuple[int, datetime | None]]


async def _states(server: Server, username: str) -> State:
    engine = await open_engine(server.settings)
    try:
        found = await engine.admin.list_sessions(username)
        return {s.id: (s.generation, s.revoked_at) for s in found}
    finally:
        await engine.close()


def states(server: Server, username: str) -> State:
    """Each session of `username` as stored: its generation and when it was revoked."""
    return asyncio.run(_states(server, username))


def refresh(server: Server, refresh_token: str, client_id: str = "native") -> httpx.Response:
    body = {"client_id": client_id, "refresh_token": refresh_token}
    if client_id in server.secrets:
        body["client_secret"] = server.secrets[client_id]
    return post(server, "/auth/refresh", body)


def assert_no_token_leaks(response: httpx.Response) -> None:
    for leak in ("kt_rt_", "eyJ", "Traceback"):  # a refresh token, a JWT, a stack
        assert leak not in response.text
    for name, value in response.headers.items():
        if name == "set-cookie":
            assert re.fullmatch(rf"{COOKIE}=\"?\"?;.*", value, re.I), value
        else:
            assert "kt_rt_" not in value


# SL-02


def test_sl02_logout_with_a_dead_cookie_or_no_cookie_at_all_is_204(server: Server) -> None:
    (user,) = new_users(server, "alice")
    cookie = cookie_of(login(server, user, "spa"))
    ended = post(server, "/auth/logout", {"client_id": "spa"}, headers=with_cookie(cookie, **CSRF))
    assert ended.status_code == 204
    [(_, revoked_at)] = states(server, user).values()
    assert revoked_at is not None
    # The user's other sessions, which none of the calls below may touch.
    other = cookie_of(login(server, user, "spa"))
    login(server, user)
    after = states(server, user)
    assert [revoked for _, revoked in after.values()].count(None) == 2

    attempts = {
        "dead cookie": post(
            server, "/auth/logout", {"client_id": "spa"}, headers=with_cookie(cookie, **CSRF)
        ),
        "no cookie": post(server, "/auth/logout", {"client_id": "spa"}, headers=CSRF),
        "no cookie, no headers": post(server, "/auth/logout", {"client_id": "spa"}),
    }
    for name, response in attempts.items():
        assert response.status_code == 204, (name, response.text)
        assert response.content == b"", name
        assert response.headers["cache-control"] == "no-store"
        # The answer clears the cookie (already gone or not), and says nothing else.
        cleared = response.headers["set-cookie"].lower()
        assert cleared.startswith(f"{COOKIE.lower()}="), name
        assert "max-age=0" in cleared, name
        assert_no_token_leaks(response)
    assert states(server, user) == after
    again = post(server, "/auth/refresh", {"client_id": "spa"}, headers=with_cookie(other, **CSRF))
    assert again.status_code == 200, again.text


def test_sl02_a_body_client_without_a_token_is_told_so_and_nothing_changes(
    server: Server,
) -> None:
    (user,) = new_users(server, "alice")
    live = login(server, user).json()
    before = states(server, user)
    for body in ({"client_id": "native"}, {}):
        response = post(server, "/auth/logout", body)
        # A body client's logout names its token (docs/api.md); none is a malformed
        # request, never a 500 and never another session ended.
        assert_error(response, 400, "invalid_request")
        assert_no_token_leaks(response)
    assert states(server, user) == before
    assert refresh(server, live["refresh_token"]).status_code == 200


# SL-03


def test_sl03_logout_all_over_http_ends_alices_three_sessions_on_two_clients_only(
    server: Server,
) -> None:
    alice, bob = new_users(server, "alice", "bob")
    alices = [login(server, alice, client).json() for client in ("native", "native", "conf")]
    bobs = [login(server, bob, client).json() for client in ("native", "conf")]
    assert {claims_client(t["access_token"]) for t in alices} == {"native", "conf"}
    bob_before = states(server, bob)
    assert len(states(server, alice)) == 3
    assert len(bob_before) == 2

    every = [*alices, *bobs]
    assert [active(server, t["access_token"]) for t in every] == [True] * 5

    auth = {"Authorization": f"Bearer {alices[0]['access_token']}"}
    assert post(server, "/auth/logout-all", headers=auth).status_code == 204

    ended = states(server, alice)
    assert len(ended) == 3
    assert all(revoked_at is not None for _, revoked_at in ended.values())
    assert [active(server, t["access_token"]) for t in every] == [False] * 3 + [True] * 2
    for tokens, client in zip(alices, ("native", "native", "conf"), strict=True):
        assert_error(refresh(server, tokens["refresh_token"], client), 400, "invalid_grant")

    assert states(server, bob) == bob_before
    listed = httpx.get(
        f"{server.base}/auth/sessions",
        headers={"Authorization": f"Bearer {bobs[0]['access_token']}"},
    )
    assert listed.status_code == 200
    assert sorted(s["client_id"] for s in listed.json()) == ["conf", "native"]
    for tokens, client in zip(bobs, ("native", "conf"), strict=True):
        assert refresh(server, tokens["refresh_token"], client).status_code == 200


def active(server: Server, access_token: str) -> bool:
    """Whether introspection (by the resource server `rs`) finds the token live."""
    answer = httpx.post(
        f"{server.base}/oauth/introspect",
        data={"token": access_token},
        auth=("rs", server.secrets["rs"]),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["active"])


def claims_client(access_token: str) -> str:
    payload = access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["client_id"])


# CK-04


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Keyturn-CSRF": "1", "Origin": "https://evil.example"},
        {"X-Keyturn-CSRF": "1", "Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"},
        {"X-Keyturn-CSRF": "1", "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    ],
    ids=["foreign origin", "cross-site fetch", "both"],
)
def test_ck04_a_cross_site_login_is_403_sets_no_cookie_and_creates_no_session(
    server: Server, headers: dict[str, str]
) -> None:
    (user,) = new_users(server, "alice")
    cookie = cookie_of(login(server, user, "spa"))
    before = states(server, user)
    # The page's request carries the victim's live cookie: a login would end its session.
    refused = post(
        server,
        "/auth/login",
        {"username": user, "password": PASSWORD, "client_id": "spa"},
        headers=with_cookie(cookie, **headers),
    )
    assert_error(refused, 403, "invalid_request")
    assert "set-cookie" not in refused.headers
    assert_no_token_leaks(refused)
    assert states(server, user) == before  # no session created, none ended or rotated
    ok = post(server, "/auth/refresh", {"client_id": "spa"}, headers=with_cookie(cookie, **CSRF))
    assert ok.status_code == 200, ok.text


# CK-06

SIMPLE_BODIES = {
    # What a cross-site form can post without a preflight (enctype text/plain writes
    # `name=value`, which a crafted name turns into JSON-looking text).
    "text/plain": lambda fields: {
        "content": json.dumps(fields),
        "headers": {"Content-Type": "text/plain"},
    },
    "application/x-www-form-urlencoded": lambda fields: {"data": fields},
    "multipart/form-data": lambda fields: {
        "files": {name: (None, value) for name, value in fields.items()}
    },
}


@pytest.mark.parametrize("path", ["/auth/refresh", "/auth/logout"])
@pytest.mark.parametrize("content_type", list(SIMPLE_BODIES))
@pytest.mark.parametrize("client_id", ["spa", "native"])
def test_ck06_simple_content_types_at_refresh_and_logout_change_nothing(
    server: Server, path: str, content_type: str, client_id: str
) -> None:
    (user,) = new_users(server, "alice")
    logged_in = login(server, user, client_id)
    if client_id == "spa":
        token = cookie_of(logged_in)
        fields = {"client_id": "spa"}
        headers = with_cookie(token, **CSRF)
    else:
        token = logged_in.json()["refresh_token"]
        fields = {"client_id": "native", "refresh_token": token}
        headers = {}
    before = states(server, user)
    [(generation, _)] = before.values()
    request = SIMPLE_BODIES[content_type](fields)
    request["headers"] = {**request.get("headers", {}), **headers}
    response = httpx.post(f"{server.base}{path}", timeout=30, **request)
    assert response.headers["content-type"].startswith("application/json")
    assert response.status_code in (400, 415), response.text
    if response.status_code == 400:
        assert_error(response, 400, "invalid_request")
    assert "set-cookie" not in response.headers
    assert_no_token_leaks(response)
    # Neither rotated nor ended: the stored generation is the login's, and the token
    # rotates from it (a rotation that happened would make this call a replay).
    assert states(server, user) == before
    if client_id == "spa":
        again = post(server, "/auth/refresh", {"client_id": "spa"}, headers=headers)
    else:
        again = refresh(server, token)
    assert again.status_code == 200, again.text
    assert list(states(server, user).values()) == [(generation + 1, None)]


# CK-10


def _wait_for_access_line(logged: Logged, seen: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        lines = logged.access_lines()
        if len(lines) > seen or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.mark.parametrize("client_id", ["native", "spa"])
def test_ck10_a_refresh_token_in_the_url_is_400_unlogged_and_still_live(
    logged: Logged, client_id: str
) -> None:
    server = logged.server
    (user,) = new_users(server, "alice")
    logged_in = login(server, user, client_id)
    token = cookie_of(logged_in) if client_id == "spa" else logged_in.json()["refresh_token"]
    before = states(server, user)
    seen = len(logged.access_lines())
    headers = CSRF if client_id == "spa" else {}
    response = httpx.post(
        f"{server.base}/auth/refresh?refresh_token={token}",
        json={"client_id": client_id},
        headers=headers,
        timeout=30,
    )
    assert_error(response, 400, "invalid_request")
    assert "set-cookie" not in response.headers

    lines = _wait_for_access_line(logged, seen)
    assert any(
        (r["method"], r["route"], r["status"]) == ("POST", "/auth/refresh", 400)
        for r in lines[seen:]
    ), lines[seen:]
    text = logged.log.read_text()
    assert token not in text
    assert token.removeprefix("kt_rt_") not in text  # not even without its prefix
    assert "refresh_token=" not in text

    assert states(server, user) == before
    if client_id == "spa":
        again = post(
            server, "/auth/refresh", {"client_id": "spa"}, headers=with_cookie(token, **CSRF)
        )
    else:
        again = refresh(server, token)
    assert again.status_code == 200, again.text


# RL-01


def test_rl01_the_lockout_ends_with_its_window_and_never_followed_the_address(
    server: Server,
) -> None:
    (victim,) = new_users(server, "victim")
    for i in range(5):
        failed = post(
            server,
            "/auth/login",
            {"username": victim, "password": "wrong guess", "client_id": "native"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
        )
        assert failed.status_code == 401
    # A new address each time, the right password: still the account's lockout.
    locked = login(server, victim, **{"X-Forwarded-For": "203.0.113.77"})
    locked_at = time.monotonic()
    assert locked.status_code == 429, locked.text
    assert locked.json()["error"] == "rate_limited"
    retry_after = int(locked.headers["retry-after"])
    assert 0 < retry_after <= LOCKOUT_SECONDS
    assert "access_token" not in locked.text
    assert login(server, "bob", **{"X-Forwarded-For": "198.51.100.0"}).status_code == 200

    # Still locked until the window's end, open once it has passed. The window began
    # at the first failure, so it ends at most `retry_after` seconds after `locked`.
    if retry_after >= 3:
        time.sleep(max(0.0, locked_at + retry_after - 2 - time.monotonic()))
        still = login(server, victim, **{"X-Forwarded-For": "203.0.113.78"})
        assert still.status_code == 429, still.text
    time.sleep(max(0.0, locked_at + retry_after + 0.5 - time.monotonic()))
    opened = login(server, victim, **{"X-Forwarded-For": "203.0.113.79"})
    assert opened.status_code == 200, opened.text
    assert "access_token" in opened.json()
