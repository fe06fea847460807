"""keyturn.client with DPoP (RFC 9449) against a started keyturn server, on SQLite and
PostgreSQL: a login with a proof and bound rotations, nonce challenges answered by
the kit without the caller knowing (it starts knowing no nonce; the server requires
them), a lost refresh answer retried with the same key, a thief who copies the token
file without the key, and the bound access token at a first-party endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server
from keyturn.client import FileStore, LoginRequired, MemoryStore, RefreshingAuth
from keyturn.client.dpop import access_token_hash
from keyturn.core.audit import EventType
from keyturn.core.ids import SessionId
from keyturn.core.models import Session
from keyturn.settings import Settings
from keyturn.wiring import open_engine
from support.engine import PASSWORD

ALICE = {"username": "alice", "password": PASSWORD}


def part_of(jwt: str, index: int) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(jwt.split(".")[index] + "=="))
    return decoded


def claims_of(jwt: str) -> dict[str, Any]:
    return part_of(jwt, 1)


def header_of(jwt: str) -> dict[str, Any]:
    return part_of(jwt, 0)


class Seen:
    """Every answer an httpx client received: (method, path, status), its request (as
    sent: an auth flow changes the same request object between tries) and its
    headers."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, str, int]] = []
        self.requests: list[httpx.Request] = []
        self.headers: list[httpx.Headers] = []

    def hooks(self) -> dict[str, Any]:
        return {"event_hooks": {"response": [self._answer]}}

    def _answer(self, response: httpx.Response) -> None:
        request = response.request
        sent = httpx.Request(request.method, request.url, headers=request.headers.copy())
        self.requests.append(sent)
        self.headers.append(response.headers)
        self.answers.append((request.method, request.url.path, response.status_code))


class LosingTransport(httpx.HTTPTransport):
    """Loses the answer of the next `lose` requests after the server handled them:
    the rotation is committed, the kit sees a cut connection."""

    def __init__(self) -> None:
        super().__init__()
        self.lose = 0
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if self.lose:
            response.read()
            response.close()
            self.lose -= 1
            self.lost += 1
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


def kit(server: Server, **options: Any) -> RefreshingAuth:
    return RefreshingAuth(f"{server.base}/oauth/token", "native", dpop=True, **options)


def login(auth: RefreshingAuth, server: Server) -> dict[str, Any]:
    return dict(auth.login(f"{server.base}/auth/login", ALICE))


async def _read(server: Server, sid: str, event: EventType) -> tuple[Session | None, list[str]]:
    engine = await open_engine(Settings(**{**server.settings.model_dump(), "issuer": server.base}))
    try:
        session = await engine.store.get_session(SessionId(sid))
        events = await engine.admin.audit(type=event.value, limit=10_000)
        return session, [e.event.reason or "" for e in events if e.event.session_id == sid]
    finally:
        await engine.close()


def session_of(server: Server, access_token: str) -> Session:
    found, _ = asyncio.run(_read(server, claims_of(access_token)["sid"], EventType.LOGIN_FAILED))
    assert found is not None
    return found


def reasons(server: Server, access_token: str, event: EventType) -> list[str]:
    return asyncio.run(_read(server, claims_of(access_token)["sid"], event))[1]


def test_a_login_with_a_proof_then_twenty_bound_rotations(server: Server, tmp_path: Path) -> None:
    store = FileStore(tmp_path / "refresh-token")
    auth = kit(server, store=store)
    tokens = login(auth, server)
    key = auth.dpop_key
    assert key is not None
    assert tokens["token_type"] == "DPoP"
    assert claims_of(tokens["access_token"])["cnf"] == {"jkt": key.thumbprint}
    access: str = tokens["access_token"]
    for _ in range(20):
        auth.refresh(stale=access)
        assert auth.access_token not in (None, access)
        access = auth.access_token or ""
        assert claims_of(access)["cnf"] == {"jkt": key.thumbprint}
    assert auth.refreshes == 20, "no nonce challenge after the login's: every answer has one"
    session = session_of(server, access)
    assert (session.generation, session.revoked, session.dpop_jkt) == (20, False, key.thumbprint)
    assert stat.S_IMODE(os.stat(store.key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.key_path == tmp_path / "refresh-token.dpop-key"


def test_nonce_challenges_are_answered_once_without_the_caller_knowing(server: Server) -> None:
    seen = Seen()
    store = MemoryStore()
    with httpx.Client(**seen.hooks()) as token_http:
        auth = kit(server, store=store, http=token_http)
        assert auth.nonces.get(server.base) is None
        login(auth, server)
        # A restart: the same store and key, no nonce known.
        again = kit(server, store=store, http=token_http)
        again.refresh()
    assert seen.answers == [
        ("POST", "/auth/login", 400),
        ("POST", "/auth/login", 200),
        ("POST", "/oauth/token", 400),
        ("POST", "/oauth/token", 200),
    ]
    first, second = (claims_of(r.headers["dpop"]) for r in seen.requests[2:])
    assert "nonce" not in first
    assert second["nonce"] == seen.headers[2]["dpop-nonce"]
    assert first["jti"] != second["jti"]
    assert (
        header_of(seen.requests[3].headers["dpop"])["jwk"]
        == header_of(seen.requests[0].headers["dpop"])["jwk"]
    )
    access = again.access_token
    assert access is not None
    # The challenged refresh consumed nothing: one rotation, no replay.
    assert session_of(server, access).generation == 1
    assert reasons(server, access, EventType.REFRESH_REPLAYED) == []


def test_a_bound_access_token_calls_the_sessions_endpoint_with_a_proof(server: Server) -> None:
    store = MemoryStore()
    auth = kit(server, store=store)
    tokens = login(auth, server)
    seen = Seen()
    # Another process of the same device: the store's key, the token, no nonce known.
    fresh = kit(server, store=store)
    fresh.set_tokens(tokens)
    with httpx.Client(auth=fresh, base_url=server.base, **seen.hooks()) as api:
        listed = api.get("/auth/sessions", params={"page": "1"})
    assert listed.status_code == 200, listed.text
    assert [s for s in listed.json() if s["current"]]
    assert [status for _, _, status in seen.answers] == [401, 200]
    challenged, proven = seen.requests
    assert 'error="use_dpop_nonce"' in seen.headers[0]["www-authenticate"]
    key = auth.dpop_key
    assert key is not None
    for request in (challenged, proven):
        assert request.headers["authorization"] == f"DPoP {tokens['access_token']}"
        proof = claims_of(request.headers["dpop"])
        assert proof["htm"] == "GET"
        assert proof["htu"] == f"{server.base}/auth/sessions"  # without the query
        assert proof["ath"] == access_token_hash(tokens["access_token"])
        assert header_of(request.headers["dpop"]) == {
            "typ": "dpop+jwt",
            "alg": "ES256",
            "jwk": key.jwk,
        }
    assert "nonce" not in claims_of(challenged.headers["dpop"])
    assert claims_of(proven.headers["dpop"])["nonce"] == seen.headers[0]["dpop-nonce"]
    assert fresh.nonces.get(server.base) == seen.headers[1].get(
        "dpop-nonce", seen.headers[0]["dpop-nonce"]
    )


def test_a_lost_refresh_answer_is_retried_with_the_same_key_and_the_session_survives(
    server: Server,
) -> None:
    losing = LosingTransport()
    with httpx.Client(transport=losing) as token_http:
        auth = kit(server, http=token_http, backoff=0.05)
        login(auth, server)
        before = auth.access_token
        losing.lose = 1
        auth.refresh(stale=before)
        assert losing.lost == 1
        assert auth.refreshes == 2, "the lost refresh was sent again"
        access = auth.access_token
        assert access is not None
        assert access != before
        for _ in range(3):  # and the session goes on
            auth.refresh(stale=auth.access_token)
    access = auth.access_token
    assert access is not None
    session = session_of(server, access)
    assert (session.generation, session.revoked) == (4, False)
    assert reasons(server, access, EventType.REFRESH_REPLAYED) == ["replayed_same_key"]
    assert reasons(server, access, EventType.REUSE_DETECTED) == []


@pytest.mark.parametrize("thief_has_dpop", [True, False], ids=["own-key", "no-proof"])
def test_a_thief_who_copies_the_token_file_without_the_key_ends_the_session(
    server: Server, tmp_path: Path, thief_has_dpop: bool
) -> None:
    store = FileStore(tmp_path / "refresh-token")
    victim = kit(server, store=store)
    tokens = login(victim, server)
    victim.refresh(stale=victim.access_token)
    copied = store.path.read_text()  # the token file, not the key file beside it
    thief = RefreshingAuth(
        f"{server.base}/oauth/token", "native", store=MemoryStore(copied), dpop=thief_has_dpop
    )
    with pytest.raises(LoginRequired):
        thief.refresh()
    assert thief.access_token is None
    assert reasons(server, tokens["access_token"], EventType.REUSE_DETECTED) == [
        "reuse_key_mismatch"
    ]
    ended = session_of(server, tokens["access_token"])
    assert ended.revoked_reason is not None
    assert ended.revoked_reason.value == "reuse_key_mismatch"
    # The victim learns it at its next refresh, and forgets the dead token.
    with pytest.raises(LoginRequired):
        victim.refresh(stale=victim.access_token)
    assert store.load() is None
    assert store.load_key() is not None, "the key is kept for the next login"


def test_a_restarted_process_proves_with_the_key_kept_beside_the_token(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "cli" / "refresh-token"
    first = kit(server, store=FileStore(path))
    login(first, server)
    restarted = kit(server, store=FileStore(path))  # no access token, no nonce
    with httpx.Client(auth=restarted, base_url=server.base) as api:
        assert api.get("/auth/sessions").status_code == 200
    assert restarted.dpop_key is not None
    assert first.dpop_key is not None
    assert restarted.dpop_key.thumbprint == first.dpop_key.thumbprint
    access = restarted.access_token
    assert access is not None
    assert session_of(server, access).generation == 1


def test_the_async_kit_logs_in_rotates_and_calls_with_proofs(server: Server) -> None:
    async def scenario() -> tuple[RefreshingAuth, list[int]]:
        auth = kit(server)
        await auth.login_async(f"{server.base}/auth/login", ALICE)
        for _ in range(3):
            await auth.refresh_async(stale=auth.access_token)
        async with httpx.AsyncClient(auth=auth, base_url=server.base) as api:
            answers = await asyncio.gather(*(api.get("/auth/sessions") for _ in range(5)))
        return auth, [a.status_code for a in answers]

    auth, statuses = asyncio.run(scenario())
    assert statuses == [200] * 5
    access = auth.access_token
    assert access is not None
    session = session_of(server, access)
    assert (session.generation, session.revoked) == (3, False)
    assert session.dpop_jkt == auth.dpop_key.thumbprint  # type: ignore[union-attr]
