"""H-10: a revoked session's access token stays refused for as long as a verifier would
accept it, leeway included, against a started server on SQLite and PostgreSQL.

The verify kit accepts a token until `exp` plus its leeway (30 s by default, at most
`MAX_LEEWAY`); the feed once forgot a session when its last token expired, so for the
rest of the leeway a logged-out token was accepted again. Access tokens here live two
seconds, so the test waits past `exp` in real time and stays well within the leeway.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Server, start_server
from keyturn.verify import TokenRejected, Verifier
from keyturn.verify.revocations import RevocationFeed
from support.engine import PASSWORD

ACCESS_TOKEN_TTL = 2


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def short_lived(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from start_server(
        request, tmp_path_factory, {"KEYTURN_ACCESS_TOKEN_TTL": str(ACCESS_TOKEN_TTL)}
    )


def _login(server: Server) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "client_id": "native"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _logout(server: Server, tokens: dict[str, Any]) -> None:
    answer = httpx.post(
        f"{server.base}/auth/logout",
        json={"client_id": "native", "refresh_token": tokens["refresh_token"]},
        timeout=30,
    )
    assert answer.status_code in (200, 204), answer.text


def _feed(server: Server) -> RevocationFeed:
    return RevocationFeed(server.base, "rs", server.secrets["rs"], interval=0.2)


def test_h10_revoked_token_refused_after_exp_within_leeway(short_lived: Server) -> None:
    server = short_lived
    tokens = _login(server)
    following = _feed(server)
    following.poll()
    verifier = Verifier(server.base, audience=server.base, revoked=following.revoked)
    accepted = verifier.verify(tokens["access_token"])
    _logout(server, tokens)
    following.poll()
    with pytest.raises(TokenRejected, match="session revoked"):
        verifier.verify(tokens["access_token"])
    # Past the token's exp (and the server's old forgetting, exp + 1 s), well within
    # the verifier's 30 s leeway: still refused, by a follower that has been polling
    # all along and by one that starts only now.
    exp = accepted.expires_at.timestamp()
    while time.time() < exp + 2.5:
        time.sleep(0.25)
    following.poll()
    with pytest.raises(TokenRejected, match="session revoked"):
        verifier.verify(tokens["access_token"])
    late = _feed(server)
    late.poll()
    late_verifier = Verifier(server.base, audience=server.base, revoked=late.revoked)
    with pytest.raises(TokenRejected, match="session revoked"):
        late_verifier.verify(tokens["access_token"])


def test_h10_live_session_token_is_still_accepted_within_leeway(short_lived: Server) -> None:
    """The other side: a token of a session that did not end is honoured for the
    leeway, as before; only revoked sessions are kept."""
    server = short_lived
    tokens = _login(server)
    following = _feed(server)
    following.poll()
    verifier = Verifier(server.base, audience=server.base, revoked=following.revoked)
    exp = verifier.verify(tokens["access_token"]).expires_at.timestamp()
    while time.time() < exp + 1.5:
        time.sleep(0.25)
    following.poll()
    assert verifier.verify(tokens["access_token"]).session_id is not None
