"""The verify kit's token cache against a started keyturn, on SQLite and PostgreSQL: an
access token from `/auth/login`, verified once and cached, is refused the moment the
revocation feed lists its session (after a logout over HTTP), and once the clock passes
its `exp` and the leeway; a one-character forgery of it is checked, not served."""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import Server
from keyturn.verify import TokenRejected, Verifier
from keyturn.verify.revocations import RevocationFeed
from support.engine import PASSWORD

LEEWAY = 30


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def login(server: Server) -> dict[str, str]:
    answer = httpx.post(
        f"{server.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "client_id": "native"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, str] = answer.json()
    return body


def test_a_cached_token_is_refused_once_the_feed_lists_its_logout(server: Server) -> None:
    follower = RevocationFeed(server.base, "rs", server.secrets["rs"])
    verifier = Verifier(server.base, audience=server.base, revoked=follower.revoked)
    tokens = login(server)
    access = tokens["access_token"]
    with httpx.Client(timeout=30) as http:
        follower.poll(http)
        verified = verifier.verify(access)
        assert access in verifier._cache
        assert verifier.verify(access) is verified
        logout = httpx.post(
            f"{server.base}/auth/logout",
            json={"client_id": "native", "refresh_token": tokens["refresh_token"]},
            timeout=30,
        )
        assert logout.status_code in (200, 204), logout.text
        # Until the feed says so, the kit cannot know: the token is still good.
        assert verifier.verify(access) is verified
        follower.poll(http)
    with pytest.raises(TokenRejected, match="session revoked"):
        verifier.verify(access)
    # Another session's cached token is untouched.
    other = login(server)["access_token"]
    assert verifier.verify(other).session_id != verified.session_id


def test_a_cached_token_is_refused_once_it_expires(server: Server) -> None:
    clock = Clock()
    verifier = Verifier(server.base, audience=server.base, leeway=LEEWAY, clock=clock)
    access = login(server)["access_token"]
    token = verifier.verify(access)
    assert access in verifier._cache
    clock.now = token.expires_at.timestamp() + LEEWAY - 1
    assert verifier.verify(access) is token
    clock.now = token.expires_at.timestamp() + LEEWAY
    with pytest.raises(TokenRejected, match="expired"):
        verifier.verify(access)
    assert access not in verifier._cache


def test_a_forgery_of_a_cached_token_is_checked_not_served(server: Server) -> None:
    verifier = Verifier(server.base, audience=server.base)
    access = login(server)["access_token"]
    verifier.verify(access)
    head, payload, signature = access.split(".")
    middle = len(payload) // 2
    flipped = "A" if payload[middle] != "A" else "B"
    forged_claims = f"{head}.{payload[:middle]}{flipped}{payload[middle + 1 :]}.{signature}"
    forged_signature = f"{head}.{payload}.{signature[:10]}{'A' if signature[10] != 'A' else 'B'}"
    forged_signature += signature[11:]
    for forged in (forged_claims, forged_signature):
        with pytest.raises(TokenRejected, match="bad signature"):
            verifier.verify(forged)
        assert forged not in verifier._cache
    assert len(verifier._cache) == 1
