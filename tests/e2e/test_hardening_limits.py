"""Who can spend whose limits, over HTTP against a started server on SQLite and
PostgreSQL (H-02, H-04, H-11).

Each caller comes from an address of its own on the loopback network (127.0.0.x): the
limits that count per address are told apart as they would be between two hosts.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, start_server
from keyturn.core.models import ClientType, GrantType
from keyturn.settings import Settings
from keyturn.storage import upgrade
from keyturn.wiring import open_engine
from support.engine import PASSWORD, SECRET, engine_with
from support.server import running_server

PUBLIC_LIMIT = 10
FAILURE_LIMIT = 5
CLIENT_LIMIT = 15
FEED_LIMIT = 10
LOGIN_LIMIT = 20
LIMITS = {
    "KEYTURN_TOKEN_REQUESTS_PER_MINUTE": str(CLIENT_LIMIT),
    "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": str(PUBLIC_LIMIT),
    "KEYTURN_CLIENT_AUTH_FAILURES_PER_MINUTE": str(FAILURE_LIMIT),
    "KEYTURN_REVOCATION_FEED_REQUESTS_PER_MINUTE": str(FEED_LIMIT),
    "KEYTURN_LOGIN_REQUESTS_PER_MINUTE": str(LOGIN_LIMIT),
}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from start_server(request, tmp_path_factory, LIMITS)


def peer(address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (any 127.0.0.x)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def junk_refresh(client_id: str, secret: str | None = None) -> dict[str, str]:
    form = {"grant_type": "refresh_token", "refresh_token": "kt_rt_junk", "client_id": client_id}
    return {**form, "client_secret": secret} if secret is not None else form


def refresh_form(token: str, client_id: str, secret: str | None = None) -> dict[str, str]:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    return {**form, "client_secret": secret} if secret is not None else form


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "rate_limited"
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["cache-control"] == "no-store"


async def _user_with_tokens(server: Server, username: str) -> tuple[str, str]:
    settings = Settings(**{**server.settings.model_dump(), "issuer": server.base})
    engine = await open_engine(settings)
    try:
        await engine.admin.add_user(username, PASSWORD)
    finally:
        await engine.close()
    return await server.login("native", username)


async def _generations(server: Server, username: str) -> list[int]:
    engine = await open_engine(server.settings)
    try:
        user = await engine.store.find_user(username)
        assert user is not None
        return [s.generation for s in await engine.store.list_sessions(user.id)]
    finally:
        await engine.close()


def new_user(server: Server) -> tuple[str, str, str]:
    """A user of this test alone: (username, refresh token, access token)."""
    name = f"u-{secrets.token_hex(4)}"
    refresh, access = asyncio.run(_user_with_tokens(server, name))
    return name, refresh, access


def test_h02_junk_refreshes_do_not_starve_real_users(server: Server) -> None:
    with peer("127.0.0.2") as attacker:
        # A public id needs no secret: anyone can name it. 30 junk refreshes...
        named = [attacker.post(f"{server.base}/oauth/token", data=junk_refresh("native"))]
        named += [
            attacker.post(f"{server.base}/oauth/token", data=junk_refresh("native"))
            for _ in range(29)
        ]
        assert {r.status_code for r in named[:PUBLIC_LIMIT]} == {400}
        assert_limited(named[-1])
        # ...and 30 bad-secret ones naming a confidential client.
        guessed = [
            attacker.post(f"{server.base}/oauth/token", data=junk_refresh("conf", "guess"))
            for _ in range(30)
        ]
        assert {r.status_code for r in guessed[:FAILURE_LIMIT]} == {401}
        assert_limited(guessed[-1])
        # Even the right secret is refused from there now: guessing stops, not slows.
        right = refresh_form("kt_rt_junk", "conf", server.secrets["conf"])
        assert_limited(attacker.post(f"{server.base}/oauth/token", data=right))
        # Ids nobody registered, chosen by the attacker: refused, never a 500.
        for _ in range(10):
            sprayed = junk_refresh(f"nobody-{secrets.token_hex(6)}", "x")
            assert attacker.post(f"{server.base}/oauth/token", data=sprayed).status_code == 401
    native_token = server.rt0("native")
    conf_token = server.rt0("conf")
    with peer("127.0.0.3") as user:
        served = user.post(f"{server.base}/oauth/token", data=refresh_form(native_token, "native"))
        assert served.status_code == 200, served.text
        form = refresh_form(conf_token, "conf", server.secrets["conf"])
        served = user.post(f"{server.base}/oauth/token", data=form)
        assert served.status_code == 200, served.text


def test_h02_wrong_secrets_at_login_spend_the_one_failure_count(server: Server) -> None:
    """Guessing a confidential client's secret through `/auth/login` spends the same
    count of failures of that id at that address as the token endpoint: alternating
    endpoints buys no extra guesses, and another address is untouched."""
    login = {"client_id": "conf", "username": "alice", "password": PASSWORD}
    with peer("127.0.0.21") as attacker:
        guesses = [
            attacker.post(f"{server.base}/auth/login", json={**login, "client_secret": "guess"})
            for _ in range(FAILURE_LIMIT)
        ]
        assert {r.status_code for r in guesses} == {401}
        right = refresh_form("kt_rt_junk", "conf", server.secrets["conf"])
        assert_limited(attacker.post(f"{server.base}/oauth/token", data=right))
        assert_limited(
            attacker.post(
                f"{server.base}/auth/login",
                json={**login, "client_secret": server.secrets["conf"]},
            )
        )
    with peer("127.0.0.22") as user:
        served = user.post(
            f"{server.base}/auth/login", json={**login, "client_secret": server.secrets["conf"]}
        )
        assert served.status_code == 200, served.text


def test_h02_bad_secret_polls_do_not_starve_the_feed(server: Server) -> None:
    feed = f"{server.base}/auth/revocations"
    with peer("127.0.0.4") as attacker:
        polls = [attacker.get(feed, auth=("rs", "not-the-secret")) for _ in range(30)]
        assert {r.status_code for r in polls[:FAILURE_LIMIT]} == {401}
        assert_limited(polls[-1])
        # Nor do failures at the token endpoint or introspection touch the feed.
        for path in ("/oauth/token", "/oauth/introspect"):
            for _ in range(3):
                attacker.post(
                    f"{server.base}{path}",
                    data={"grant_type": "client_credentials", "token": "x"},
                    auth=("rs", "nope"),
                )
    with peer("127.0.0.5") as rs:
        assert rs.get(feed, auth=("rs", server.secrets["rs"])).status_code == 200
        # The resource server's own token traffic spends its client limit, not its feed.
        grants = [
            rs.post(
                f"{server.base}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("rs", server.secrets["rs"]),
            )
            for _ in range(CLIENT_LIMIT + 1)
        ]
        assert grants[0].status_code == 200, grants[0].text
        assert_limited(grants[-1])
        polled = [rs.get(feed, auth=("rs", server.secrets["rs"])) for _ in range(FEED_LIMIT - 1)]
        assert {r.status_code for r in polled} == {200}
        # The feed has a limit of its own, spent only by the authenticated client.
        assert_limited(rs.get(feed, auth=("rs", server.secrets["rs"])))


def _change(client: httpx.Client, server: Server, access: str, current: str) -> httpx.Response:
    return client.post(
        f"{server.base}/auth/password",
        json={"current_password": current, "new_password": "a brand new passphrase 42"},
        headers={"Authorization": f"Bearer {access}"},
    )


def test_h04_password_guessing_is_throttled_and_locks(server: Server) -> None:
    name, _, access = new_user(server)
    with peer("127.0.0.6") as guesser:
        wrong = [_change(guesser, server, access, f"guess {i}") for i in range(5)]
        assert {r.status_code for r in wrong} == {401}
        # The login's lockout: refused with 429, even with the right password.
        assert_limited(_change(guesser, server, access, "guess 5"))
        assert_limited(_change(guesser, server, access, PASSWORD))
        login = {"username": name, "password": PASSWORD, "client_id": "native"}
        assert_limited(guesser.post(f"{server.base}/auth/login", json=login))
    # One rule, one counter: failed logins lock the password change too.
    name, _, access = new_user(server)
    with peer("127.0.0.7") as guesser:
        for i in range(5):
            failed = {"username": name, "password": f"guess {i}", "client_id": "native"}
            assert guesser.post(f"{server.base}/auth/login", json=failed).status_code == 401
        assert_limited(_change(guesser, server, access, PASSWORD))
    # Per address: guesses spread over accounts (none locked) still stop.
    users = [new_user(server) for _ in range(LOGIN_LIMIT // 4 + 1)]
    with peer("127.0.0.8") as guesser:
        answers = [
            _change(guesser, server, access, f"guess {i}")
            for _, _, access in users
            for i in range(4)
        ]
        assert {r.status_code for r in answers[:LOGIN_LIMIT]} == {401}
        assert_limited(answers[-1])


def _first_party(client: httpx.Client, server: Server, path: str, body: dict[str, Any]) -> int:
    return client.post(f"{server.base}{path}", json=body).status_code


def test_h11_first_party_refresh_and_logout_are_limited(server: Server) -> None:
    junk = {"client_id": "native", "refresh_token": "kt_rt_junk"}
    name, token, _ = new_user(server)
    real = {"client_id": "native", "refresh_token": token}
    with peer("127.0.0.9") as attacker:
        refreshes = [_first_party(attacker, server, "/auth/refresh", junk) for _ in range(12)]
        assert refreshes[:PUBLIC_LIMIT] == [400] * PUBLIC_LIMIT
        assert refreshes[-1] == 429
        # Refused before the token is read: the 429 rotates nothing (used below).
        assert _first_party(attacker, server, "/auth/refresh", real) == 429
    with peer("127.0.0.10") as attacker:
        logouts = [_first_party(attacker, server, "/auth/logout", junk) for _ in range(12)]
        assert logouts[:PUBLIC_LIMIT] == [204] * PUBLIC_LIMIT
        assert logouts[-1] == 429
    with peer("127.0.0.11") as attacker:
        guess = {**junk, "client_id": "conf", "client_secret": "guess"}
        failures = [_first_party(attacker, server, "/auth/refresh", guess) for _ in range(8)]
        assert failures[:FAILURE_LIMIT] == [401] * FAILURE_LIMIT
        assert failures[-1] == 429
    # The same client from another address is served, and its logout works.
    with peer("127.0.0.12") as user:
        answer = user.post(f"{server.base}/auth/refresh", json=real)
        assert answer.status_code == 200, answer.text
        rotated = answer.json()["refresh_token"]
        # One rotation in all: the refused request had rotated nothing.
        assert asyncio.run(_generations(server, name)) == [1]
        body = {"client_id": "native", "refresh_token": rotated}
        assert _first_party(user, server, "/auth/logout", body) == 204


async def _seed_resource_server(url: str, client_id: str) -> str:
    engine = await engine_with(url, secret_key=SECRET)
    try:
        made = await engine.admin.add_client(
            client_id,
            ClientType.CONFIDENTIAL,
            grant_types={GrantType.CLIENT_CREDENTIALS},
            can_introspect=True,
        )
        return made.secret or ""
    finally:
        await engine.close()


def test_h02_failure_and_feed_counts_are_shared_between_workers_through_redis(
    tmp_path: Path, redis_url: str
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    upgrade(url)
    # An id of this run's own: the counts in the shared Redis outlive the test.
    rs = f"rs-{secrets.token_hex(4)}"
    secret = asyncio.run(_seed_resource_server(url, rs))
    env = {
        "KEYTURN_DATABASE_URL": url,
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_REDIS_URL": redis_url,
        **LIMITS,
    }
    with running_server(env, workers=2) as base:
        feed = f"{base}/auth/revocations"

        def poll(address: str, password: str) -> int:
            # A new connection each time, so the requests spread over both workers.
            with peer(address) as client:
                return client.get(feed, auth=(rs, password)).status_code

        failures = [poll("127.0.0.13", "wrong") for _ in range(FAILURE_LIMIT + 1)]
        assert failures == [401] * FAILURE_LIMIT + [429]
        polls = [poll("127.0.0.14", secret) for _ in range(FEED_LIMIT + 1)]
        assert polls == [200] * FEED_LIMIT + [429]
