"""DPoP (RFC 9449) over real HTTP against a started server, on SQLite and PostgreSQL:
bound logins and rotations, nonce challenges that consume nothing, key-mismatch theft,
key continuity, replayed and misdirected proofs, introspection and metadata, the
first-party endpoints that take a bound access token, and hostile headers.

Proofs are made by PyJWT (`support.dpop_proofs`); the server requires nonces (the
default), so every client here learns its nonce from a `use_dpop_nonce` challenge or
from the `DPoP-Nonce` header of a previous answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest

from conftest import Server
from keyturn.core.audit import EventType
from keyturn.core.ids import SessionId
from keyturn.core.models import ClientType, Delivery, GrantType, Session
from keyturn.core.policy import ClientKind, DpopMode, RotationSettings
from keyturn.settings import Settings
from keyturn.wiring import open_engine
from support.dpop_proofs import Client as KeyHolder
from support.dpop_proofs import ath
from support.engine import PASSWORD

TOKEN = "/oauth/token"
LOGIN = "/auth/login"
REFRESH = "/auth/refresh"


def claims_of(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return decoded


class Device:
    """A DPoP client: one key, the last nonce the server gave it."""

    def __init__(self, server: Server, key: KeyHolder | None = None) -> None:
        self.server = server
        self.key = key or KeyHolder()
        self.nonce: str | None = None

    def proof(self, path: str, method: str = "POST", **changes: Any) -> str:
        claims: dict[str, Any] = {
            "htu": self.server.base + path,
            "htm": method,
            "iat": int(time.time()),
            "nonce": self.nonce,
        }
        claims.update(changes)
        return self.key.proof(**claims)

    def send(
        self, path: str, *, retry_nonce: bool = True, proof: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """POST to `path` with a fresh proof (or `proof`); once more with the nonce of a
        `use_dpop_nonce` challenge, as RFC 9449 §8 has a client do."""
        for _ in range(2):
            headers = {**kwargs.pop("headers", {}), "DPoP": proof or self.proof(path)}
            response = httpx.post(self.server.base + path, headers=headers, timeout=30, **kwargs)
            self.nonce = response.headers.get("dpop-nonce", self.nonce)
            challenged = response.status_code == 400 and error(response) == "use_dpop_nonce"
            if not (retry_nonce and challenged and proof is None):
                return response
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "DPoP"}
        return response

    def login(self, client_id: str = "native") -> httpx.Response:
        return self.send(
            LOGIN, json={"client_id": client_id, "username": "alice", "password": PASSWORD}
        )

    def refresh(self, token: str, client_id: str = "native", **kwargs: Any) -> httpx.Response:
        return self.send(
            TOKEN,
            data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
            **kwargs,
        )


def error(response: httpx.Response) -> str | None:
    try:
        value = response.json().get("error")
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def bearer_refresh(server: Server, token: str, client_id: str = "native") -> httpx.Response:
    return httpx.post(
        server.base + TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
        timeout=30,
    )


async def _read(server: Server, sid: str) -> tuple[Session | None, list[str]]:
    engine = await open_engine(Settings(**{**server.settings.model_dump(), "issuer": server.base}))
    try:
        session = await engine.store.get_session(SessionId(sid))
        events = await engine.admin.audit(type=EventType.REUSE_DETECTED.value)
        reasons = [e.event.reason or "" for e in events if e.event.session_id == sid]
        return session, reasons
    finally:
        await engine.close()


def session_of(server: Server, access_token: str) -> Session:
    found, _ = asyncio.run(_read(server, claims_of(access_token)["sid"]))
    assert found is not None
    return found


def theft_reasons(server: Server, access_token: str) -> list[str]:
    return asyncio.run(_read(server, claims_of(access_token)["sid"]))[1]


async def _add_clients(server: Server) -> None:
    engine = await open_engine(server.settings)
    grants = {GrantType.PASSWORD, GrantType.REFRESH_TOKEN}
    try:
        for name, rotation in (
            ("dpop-native", RotationSettings(kind=ClientKind.NATIVE)),
            ("dpop-req", RotationSettings(dpop=DpopMode.REQUIRED)),
            ("dpop-off", RotationSettings(dpop=DpopMode.OFF)),
        ):
            await engine.admin.add_client(
                name,
                ClientType.PUBLIC,
                grant_types=grants,
                scope=frozenset({"read"}),
                delivery=Delivery.BODY,
                rotation=rotation,
            )
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def dpop_server(server: Server) -> Server:
    asyncio.run(_add_clients(server))
    return server


def bound_login(server: Server, client_id: str = "native") -> tuple[Device, dict[str, Any]]:
    device = Device(server)
    response = device.login(client_id)
    assert response.status_code == 200, response.text
    return device, response.json()


def test_twenty_dpop_bound_rotations(dpop_server: Server) -> None:
    device, tokens = bound_login(dpop_server)
    assert tokens["token_type"] == "DPoP"
    for round_ in range(20):
        if round_ % 2:
            response = device.send(
                REFRESH, json={"client_id": "native", "refresh_token": tokens["refresh_token"]}
            )
        else:
            response = device.refresh(tokens["refresh_token"])
        assert response.status_code == 200, response.text
        assert response.headers["dpop-nonce"]
        tokens = response.json()
        assert tokens["token_type"] == "DPoP"
        assert claims_of(tokens["access_token"])["cnf"] == {"jkt": device.key.jkt}
    session = session_of(dpop_server, tokens["access_token"])
    assert (session.generation, session.revoked, session.dpop_jkt) == (20, False, device.key.jkt)


def test_a_nonce_challenge_consumes_nothing(dpop_server: Server) -> None:
    device, tokens = bound_login(dpop_server)
    before = session_of(dpop_server, tokens["access_token"])
    device.nonce = None  # a client that has not learnt the current nonce yet
    challenged = device.refresh(tokens["refresh_token"], retry_nonce=False)
    assert challenged.status_code == 400
    assert error(challenged) == "use_dpop_nonce"
    assert challenged.headers["dpop-nonce"]
    assert challenged.headers["cache-control"] == "no-store"
    between = session_of(dpop_server, tokens["access_token"])
    assert (between.generation, between.last_used_at, between.replays) == (
        before.generation,
        before.last_used_at,
        before.replays,
    )
    assert not between.revoked
    # The same token, now with the nonce, rotates as if nothing had happened.
    rotated = device.refresh(tokens["refresh_token"], retry_nonce=False)
    assert rotated.status_code == 200, rotated.text
    assert session_of(dpop_server, rotated.json()["access_token"]).generation == 1


@pytest.mark.parametrize("thief_proves_a_key", [True, False], ids=["own-key", "no-proof"])
def test_a_copied_bound_token_ends_the_session(
    dpop_server: Server, thief_proves_a_key: bool
) -> None:
    device, tokens = bound_login(dpop_server)
    copied = tokens["refresh_token"]
    if thief_proves_a_key:
        stolen = Device(dpop_server).refresh(copied)
    else:
        stolen = bearer_refresh(dpop_server, copied)
    assert stolen.status_code == 400
    assert error(stolen) == "invalid_grant"
    session = session_of(dpop_server, tokens["access_token"])
    assert session.revoked_reason is not None
    assert session.revoked_reason.value == "reuse_key_mismatch"
    assert theft_reasons(dpop_server, tokens["access_token"]) == ["reuse_key_mismatch"]
    # The device learns it at its next refresh, with its own key.
    assert error(device.refresh(copied)) == "invalid_grant"


def test_a_stale_generation_from_the_devices_own_key_gets_the_live_token(
    dpop_server: Server,
) -> None:
    device, first = bound_login(dpop_server, "dpop-native")
    tokens = [first]
    for _ in range(3):
        response = device.refresh(tokens[-1]["refresh_token"], "dpop-native")
        assert response.status_code == 200, response.text
        tokens.append(response.json())
    retried = device.refresh(tokens[1]["refresh_token"], "dpop-native")  # generation g-2
    assert retried.status_code == 200, retried.text
    assert retried.json()["refresh_token"] == tokens[3]["refresh_token"]
    session = session_of(dpop_server, retried.json()["access_token"])
    assert (session.generation, session.revoked) == (3, False)


def test_a_replayed_proof_is_refused_and_consumes_nothing(dpop_server: Server) -> None:
    device, tokens = bound_login(dpop_server)
    proof = device.proof(TOKEN)
    first = device.refresh(tokens["refresh_token"], proof=proof)
    assert first.status_code == 200, first.text
    live = first.json()["refresh_token"]
    again = device.refresh(live, proof=proof)  # the same jti
    assert again.status_code == 400
    assert error(again) == "invalid_dpop_proof"
    assert device.refresh(live).status_code == 200  # the live token was not consumed


@pytest.mark.parametrize(
    "changes",
    [{"htu": "/auth/refresh"}, {"htm": "GET"}, {"htu": "http://evil.test/oauth/token"}],
    ids=["other-path", "other-method", "other-host"],
)
def test_a_proof_for_another_request_is_refused(
    dpop_server: Server, changes: dict[str, str]
) -> None:
    device, tokens = bound_login(dpop_server)
    htu = changes.get("htu", TOKEN)
    claims = {**changes, "htu": htu if htu.startswith("http") else dpop_server.base + htu}
    refused = device.refresh(tokens["refresh_token"], proof=device.proof(TOKEN, **claims))
    assert refused.status_code == 400
    assert error(refused) == "invalid_dpop_proof"
    assert session_of(dpop_server, tokens["access_token"]).generation == 0
    assert device.refresh(tokens["refresh_token"]).status_code == 200


def test_the_bound_access_token_has_cnf_and_introspection_shows_it(dpop_server: Server) -> None:
    device, tokens = bound_login(dpop_server)
    assert tokens["token_type"] == "DPoP"
    assert claims_of(tokens["access_token"])["cnf"] == {"jkt": device.key.jkt}
    answer = httpx.post(
        dpop_server.base + "/oauth/introspect",
        data={"token": tokens["access_token"]},
        auth=("rs", dpop_server.secrets["rs"]),
        timeout=30,
    ).json()
    assert answer["active"] is True
    assert answer["token_type"] == "DPoP"
    assert answer["cnf"] == {"jkt": device.key.jkt}


def test_metadata_advertises_the_proof_algorithms(dpop_server: Server) -> None:
    metadata = httpx.get(dpop_server.base + "/.well-known/oauth-authorization-server").json()
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "RS256", "PS256"]


def test_a_bound_access_token_at_the_first_party_endpoints_needs_its_proof(
    dpop_server: Server,
) -> None:
    device, tokens = bound_login(dpop_server)
    access = tokens["access_token"]
    url = dpop_server.base + "/auth/sessions"
    as_bearer = httpx.get(url, headers={"Authorization": f"Bearer {access}"})
    assert as_bearer.status_code == 401
    assert error(as_bearer) == "invalid_token"
    no_proof = httpx.get(url, headers={"Authorization": f"DPoP {access}"})
    assert no_proof.status_code == 401
    assert error(no_proof) == "invalid_dpop_proof"
    assert no_proof.headers["www-authenticate"].startswith("DPoP ")
    no_ath = device.proof("/auth/sessions", "GET")
    refused = httpx.get(url, headers={"Authorization": f"DPoP {access}", "DPoP": no_ath})
    assert error(refused) == "invalid_dpop_proof"
    proof = device.proof("/auth/sessions", "GET", ath=ath(access))
    listed = httpx.get(url, headers={"Authorization": f"DPoP {access}", "DPoP": proof})
    assert listed.status_code == 200, listed.text
    assert any(s["current"] for s in listed.json())


# Hostile


def test_an_oversize_dpop_header_is_refused_and_consumes_nothing(dpop_server: Server) -> None:
    token = dpop_server.rt0()
    response = httpx.post(
        dpop_server.base + TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": "native"},
        headers={"DPoP": "a" * 9000},
    )
    assert response.status_code == 400
    assert error(response) == "invalid_dpop_proof"
    assert bearer_refresh(dpop_server, token).status_code == 200


def test_two_dpop_headers_are_refused(dpop_server: Server) -> None:
    device = Device(dpop_server)
    device.nonce = httpx.post(
        dpop_server.base + TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": "x", "client_id": "native"},
        headers={"DPoP": device.proof(TOKEN)},
    ).headers["dpop-nonce"]
    token = dpop_server.rt0()
    response = httpx.post(
        dpop_server.base + TOKEN,
        content=f"grant_type=refresh_token&refresh_token={token}&client_id=native",
        headers=[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("DPoP", device.proof(TOKEN)),
            ("DPoP", device.proof(TOKEN)),
        ],
    )
    assert response.status_code == 400
    assert error(response) == "invalid_dpop_proof"
    assert bearer_refresh(dpop_server, token).status_code == 200


def test_a_dpop_header_on_a_confidential_clients_unbound_session(dpop_server: Server) -> None:
    token, _ = asyncio.run(dpop_server.login("conf"))
    auth = ("conf", dpop_server.secrets["conf"])
    garbage = httpx.post(
        dpop_server.base + TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers={"DPoP": "not.a.proof"},
        auth=auth,
    )
    assert garbage.status_code == 400
    assert error(garbage) == "invalid_dpop_proof"
    device = Device(dpop_server)
    bound = device.send(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": token}, auth=auth
    )
    assert bound.status_code == 200, bound.text  # the garbage consumed nothing
    tokens = bound.json()
    assert tokens["token_type"] == "DPoP"
    assert claims_of(tokens["access_token"])["cnf"] == {"jkt": device.key.jkt}
    # RFC 9449 §5: a confidential client's refresh token stays unbound.
    assert session_of(dpop_server, tokens["access_token"]).dpop_jkt is None
    plain = httpx.post(
        dpop_server.base + TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=auth,
    )
    assert plain.status_code == 200
    assert plain.json()["token_type"] == "Bearer"


def test_a_client_that_requires_dpop_gets_nothing_without_a_proof(dpop_server: Server) -> None:
    login = httpx.post(
        dpop_server.base + LOGIN,
        json={"client_id": "dpop-req", "username": "alice", "password": PASSWORD},
    )
    assert login.status_code == 400
    assert error(login) == "invalid_dpop_proof"
    device, tokens = bound_login(dpop_server, "dpop-req")
    refused = bearer_refresh(dpop_server, tokens["refresh_token"], "dpop-req")
    assert refused.status_code == 400
    assert error(refused) == "invalid_dpop_proof"
    assert session_of(dpop_server, tokens["access_token"]).generation == 0
    assert device.refresh(tokens["refresh_token"], "dpop-req").status_code == 200


def test_a_client_with_dpop_off_refuses_a_proof(dpop_server: Server) -> None:
    refused = Device(dpop_server).login("dpop-off")
    assert refused.status_code == 400
    assert error(refused) == "invalid_dpop_proof"
    plain = httpx.post(
        dpop_server.base + LOGIN,
        json={"client_id": "dpop-off", "username": "alice", "password": PASSWORD},
    )
    assert plain.status_code == 200
    assert plain.json()["token_type"] == "Bearer"
