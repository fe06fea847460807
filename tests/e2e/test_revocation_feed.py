"""The revocation feed (GET /auth/revocations) and its follower in keyturn.verify,
against a started server on SQLite and PostgreSQL: every way a session ends shows in the
feed, and a verifier following it refuses a logged-out session's access token within
the bound the docs give (SL-08), without calling the server per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Server, start_server
from keyturn.settings import Settings
from keyturn.verify import TokenRejected, Verifier
from keyturn.verify.revocations import RevocationFeed
from keyturn.wiring import open_engine
from support.engine import PASSWORD

POLL_INTERVAL = 0.2
BOUND = POLL_INTERVAL + 3.0
"""What docs/verify.md promises: the poll interval plus a few seconds."""


def feed(server: Server, **params: str) -> httpx.Response:
    return httpx.get(
        f"{server.base}/auth/revocations",
        params=params,
        auth=("rs", server.secrets["rs"]),
        timeout=30,
    )


def login(server: Server, client_id: str = "native", username: str = "alice") -> dict[str, Any]:
    answer = httpx.post(
        f"{server.base}/auth/login",
        json={"username": username, "password": PASSWORD, "client_id": client_id},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def sid_of(server: Server, access_token: str) -> str:
    token = Verifier(server.base, audience=server.base).verify(access_token)
    assert token.session_id is not None
    return token.session_id


def everything(server: Server) -> dict[str, dict[str, Any]]:
    answer = feed(server)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    return {item["sid"]: item for item in answer.json()["revocations"]}


def test_logout_shows_in_the_feed_with_when_to_forget_it(server: Server) -> None:
    tokens = login(server)
    sid = sid_of(server, tokens["access_token"])
    assert sid not in everything(server)
    httpx.post(
        f"{server.base}/auth/logout",
        json={"client_id": "native", "refresh_token": tokens["refresh_token"]},
    )
    item = everything(server)[sid]
    assert item["forget_after"] >= int(time.time()) + tokens["expires_in"] - 5
    assert item["revoked_at"] <= int(time.time())


def test_reuse_password_change_admin_and_disabling_all_feed_it(server: Server) -> None:
    reused = login(server)
    first = reused["refresh_token"]
    second = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first, "client_id": "native"},
    ).json()["refresh_token"]
    httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": second, "client_id": "native"},
    )
    # The first token is two generations behind: reuse, whatever the grace window.
    replay = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first, "client_id": "native"},
    )
    assert replay.status_code == 400
    by_admin = login(server, username="bob")
    other_device = login(server, username="bob")

    async def admin_side() -> None:
        engine = await open_engine(
            Settings(**{**server.settings.model_dump(), "issuer": server.base})
        )
        try:
            await engine.admin.revoke_session(sid_of(server, by_admin["access_token"]))
        finally:
            await engine.close()

    asyncio.run(admin_side())
    changed = login(server, username="bob")
    answer = httpx.post(
        f"{server.base}/auth/password",
        json={"current_password": PASSWORD, "new_password": PASSWORD},
        headers={"Authorization": f"Bearer {changed['access_token']}"},
    )
    assert answer.status_code in (200, 204), answer.text
    listed = everything(server)
    for tokens in (reused, by_admin, other_device):
        assert sid_of_unverified(tokens["access_token"]) in listed


def sid_of_unverified(access_token: str) -> str:
    import jwt

    sid: str = jwt.decode(access_token, options={"verify_signature": False})["sid"]
    return sid


def test_the_feed_pages_with_its_cursor(server: Server) -> None:
    for _ in range(3):
        tokens = login(server)
        httpx.post(
            f"{server.base}/auth/logout",
            json={"client_id": "native", "refresh_token": tokens["refresh_token"]},
        )
    whole = list(everything(server))
    seen: list[str] = []
    cursor = None
    while True:
        answer = feed(server, limit="1", **({"since": cursor} if cursor else {}))
        body = answer.json()
        seen += [item["sid"] for item in body["revocations"]]
        cursor = body["cursor"]
        if not body["more"]:
            break
    assert seen == whole
    assert feed(server, since=cursor).json()["revocations"] == []


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"since": "not-a-cursor"}, 400, "invalid_request"),
        ({"since": "123.!!!"}, 400, "invalid_request"),
        ({"limit": "0"}, 400, "invalid_request"),
        ({"limit": "100000"}, 400, "invalid_request"),
        ({"limit": "-1"}, 400, "invalid_request"),
        ({"other": "x"}, 400, "invalid_request"),
    ],
)
def test_bad_parameters_are_invalid_request(
    server: Server, params: dict[str, str], status: int, error: str
) -> None:
    answer = feed(server, **params)
    assert answer.status_code == status
    assert answer.json()["error"] == error


def test_only_an_authenticated_resource_server_may_read_it(server: Server) -> None:
    url = f"{server.base}/auth/revocations"
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"
    wrong = httpx.get(url, auth=("rs", "wrong"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Basic")
    not_a_resource_server = httpx.get(url, auth=("conf", server.secrets["conf"]))
    assert not_a_resource_server.status_code == 401


@pytest.mark.parametrize("how", ["logout", "reuse"])
def test_sl08_a_verifier_following_the_feed_refuses_an_ended_sessions_token(
    server: Server, how: str
) -> None:
    follower = RevocationFeed(
        server.base, "rs", server.secrets["rs"], interval=POLL_INTERVAL, overlap=5
    )
    calls: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: calls.append(str(r.url))]})
    verifier = Verifier(server.base, audience=server.base, revoked=follower.revoked, http=http)
    follower.start()
    try:
        tokens = login(server)
        access = tokens["access_token"]
        verifier.verify(access)
        fetches = len(calls)
        if how == "logout":
            httpx.post(
                f"{server.base}/auth/logout",
                json={"client_id": "native", "refresh_token": tokens["refresh_token"]},
            )
        else:
            rt = tokens["refresh_token"]
            for _ in range(2):
                rt = httpx.post(
                    f"{server.base}/oauth/token",
                    data={
                        "grant_type": "refresh_token",
                        "refresh_token": rt,
                        "client_id": "native",
                    },
                ).json()["refresh_token"]
            replay = httpx.post(
                f"{server.base}/oauth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": tokens["refresh_token"],
                    "client_id": "native",
                },
            )
            assert replay.json()["error"] == "invalid_grant"
        ended = time.monotonic()
        delay, reason = None, None
        while time.monotonic() - ended < BOUND:
            try:
                verifier.verify(access)
            except TokenRejected as rejected:
                delay, reason = time.monotonic() - ended, rejected.reason
                break
            time.sleep(0.02)
        assert delay is not None, f"still accepted {BOUND} s after the session ended"
        assert reason == "session revoked"
        print(f"SL-08 ({how}): refused {delay:.2f} s after the session ended")
        assert len(calls) == fetches, "the verifier made no network call per request"
        # Another session's token is unaffected.
        verifier.verify(login(server)["access_token"])
    finally:
        follower.stop()
        http.close()
    assert follower.polls >= 2


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def announcing(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[Server]:
    """A server configured with Redis: it announces each revocation on the channel."""
    yield from start_server(request, tmp_path_factory, {"KEYTURN_REDIS_URL": redis_url})


def test_sl08_through_redis_a_logout_arrives_before_any_poll(
    announcing: Server, redis_url: str
) -> None:
    server = announcing
    follower = RevocationFeed(
        server.base, "rs", server.secrets["rs"], interval=3600, redis_url=redis_url
    )
    verifier = Verifier(server.base, audience=server.base, revoked=follower.revoked)
    follower.start()
    try:
        deadline = time.monotonic() + 10
        while follower.polls < 1:  # the one poll at start; the next is an hour away
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)  # the subscription is up
        tokens = login(server)
        verifier.verify(tokens["access_token"])
        httpx.post(
            f"{server.base}/auth/logout",
            json={"client_id": "native", "refresh_token": tokens["refresh_token"]},
        )
        ended = time.monotonic()
        while time.monotonic() - ended < BOUND:
            if follower.revoked(sid_of_unverified(tokens["access_token"])):
                break
            time.sleep(0.01)
        with pytest.raises(TokenRejected):
            verifier.verify(tokens["access_token"])
        print(f"SL-08 (redis): refused {time.monotonic() - ended:.3f} s after the logout")
        assert follower.polls == 1, "the announcement, not a poll, carried it"
        assert follower.announcements >= 1
    finally:
        follower.stop()
