"""DPoP binding (RFC 9449) through the engine, on every store: sessions opened with a
proof are bound to its key, their access tokens carry `cnf.jkt`, a bound refresh token
without its key ends the session on both refresh paths (the one-round-trip attempt
included), the session's own key keeps a stale device alive, and a client's DPoP mode
is stored, updated and enforced before anything is consumed.

Proofs are made by PyJWT (`support.dpop_proofs`), checked by the engine's own
`DpopProofs` exactly as the web layer does, nonces included.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.dpop_errors import InvalidDpopProof, UseDpopNonce
from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import SessionId
from keyturn.core.models import Client, ClientType, Delivery, GrantType, Session
from keyturn.core.policy import ClientKind, DpopMode, RotationSettings
from keyturn.crypto.pkce import s256
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from keyturn.service.dpop_proofs import ProofRequest
from keyturn.service.engine import Engine
from keyturn.service.results import IssuedTokens
from support.dpop_proofs import Client as KeyHolder
from support.engine import PASSWORD, FakeClock, engine_with

TOKEN_PATH = "/oauth/token"


def claims_of(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return decoded


@dataclass
class World:
    engine: Engine
    clock: FakeClock
    public: Client
    confidential: Client
    secret: str

    async def key(self, holder: KeyHolder, path: str = TOKEN_PATH, **changes: Any) -> str | None:
        """The thumbprint the engine verifies for a fresh proof of `holder`, as the web
        layer gets it (current nonce and time unless `changes` say otherwise)."""
        claims: dict[str, Any] = {
            "htu": self.engine.dpop.uri_of(path),
            "iat": int(self.clock.now().timestamp()),
            "nonce": self.engine.dpop.nonce(),
        }
        claims.update(changes)
        proof = holder.proof(**claims)
        return await self.engine.dpop.key_of(ProofRequest((proof,), "POST", path))

    async def login(self, client: Client | None = None, key: str | None = None) -> IssuedTokens:
        return await self.engine.login.login(
            "alice", PASSWORD, client or self.public, key_thumbprint=key
        )

    async def session(self, tokens: IssuedTokens) -> Session:
        found = await self.engine.store.get_session(tokens.session_id)  # type: ignore[arg-type]
        assert found is not None
        return found

    async def refresh_for(
        self, token: str, key: str | None, client: Client | None = None
    ) -> IssuedTokens:
        """Through `/oauth/token`'s service path, the one-round-trip attempt first."""
        chosen = client or self.public
        secret = self.secret if chosen.is_confidential else None
        method = AuthMethod.POST if secret else AuthMethod.NONE
        return await self.engine.refresher.refresh_for(
            ClientCredentials(chosen.id, secret, method), token, key_thumbprint=key
        )


@pytest.fixture
async def world(store_url: tuple[str, str | None]) -> AsyncIterator[World]:
    clock = FakeClock()
    engine = await engine_with(store_url[0], clock=clock, schema=store_url[1])
    await engine.admin.add_user("alice", PASSWORD)
    grants = {GrantType.PASSWORD, GrantType.REFRESH_TOKEN}
    public = await engine.admin.add_client(
        "device",
        ClientType.PUBLIC,
        grant_types=grants,
        scope=frozenset({"read"}),
        delivery=Delivery.BODY,
        rotation=RotationSettings(kind=ClientKind.NATIVE),
    )
    confidential = await engine.admin.add_client(
        "backend", ClientType.CONFIDENTIAL, grant_types=grants, scope=frozenset({"read"})
    )
    yield World(engine, clock, public.client, confidential.client, confidential.secret or "")
    await engine.close()


async def test_login_with_a_proof_binds_the_session_and_its_access_token(world: World) -> None:
    device = KeyHolder()
    issued = await world.login(key=await world.key(device, "/auth/login"))
    assert issued.token_type == "DPoP"
    assert claims_of(issued.access_token)["cnf"] == {"jkt": device.jkt}
    assert (await world.session(issued)).dpop_jkt == device.jkt


async def test_twenty_bound_rotations_on_both_refresh_paths(world: World) -> None:
    device = KeyHolder()
    issued = await world.login(key=await world.key(device))
    for round_ in range(20):
        world.clock.advance(30)
        key = await world.key(device)
        if round_ % 2:
            issued = await world.refresh_for(issued.refresh_token or "", key)
        else:
            issued = await world.engine.refresher.refresh(
                issued.refresh_token or "", world.public, key_thumbprint=key
            )
        assert issued.token_type == "DPoP"
        assert claims_of(issued.access_token)["cnf"] == {"jkt": device.jkt}
    session = await world.session(issued)
    assert session.generation == 20
    assert not session.revoked


@pytest.mark.parametrize("path", ["refresh_for", "refresh"])
@pytest.mark.parametrize("thief_has_a_key", [True, False])
async def test_a_bound_token_without_its_key_ends_the_session(
    world: World, path: str, thief_has_a_key: bool
) -> None:
    device = KeyHolder()
    issued = await world.login(key=await world.key(device))
    copied = issued.refresh_token or ""
    thief_key = await world.key(KeyHolder()) if thief_has_a_key else None
    # On `refresh_for` the one-round-trip attempt must not rotate it: its guard
    # refuses a bound session, which goes on to the rules and their key check.
    attempt = (
        world.refresh_for(copied, thief_key)
        if path == "refresh_for"
        else world.engine.refresher.refresh(copied, world.public, key_thumbprint=thief_key)
    )
    with pytest.raises(InvalidGrant):
        await attempt
    session = await world.session(issued)
    assert session.revoked_reason is not None
    assert session.revoked_reason.value == "reuse_key_mismatch"
    assert session.generation == 0
    events = await world.engine.admin.audit(type=EventType.REUSE_DETECTED.value)
    assert [e.event.reason for e in events if e.event.session_id == session.id] == [
        "reuse_key_mismatch"
    ]
    # The device is told at its next refresh, with its own key.
    with pytest.raises(InvalidGrant):
        await world.refresh_for(copied, await world.key(device))


async def test_a_stale_generation_proven_by_the_sessions_own_key_gets_the_live_token(
    world: World,
) -> None:
    device = KeyHolder()
    tokens = [await world.login(key=await world.key(device))]
    for _ in range(3):
        world.clock.advance(60)
        tokens.append(
            await world.refresh_for(tokens[-1].refresh_token or "", await world.key(device))
        )
    world.clock.advance(1800)  # far outside a browser's window, inside the idle deadline
    retried = await world.refresh_for(tokens[1].refresh_token or "", await world.key(device))
    assert retried.refresh_token == tokens[3].refresh_token
    session = await world.session(retried)
    assert session.generation == 3
    assert not session.revoked


async def test_an_unbound_session_stays_unbound_when_a_proof_comes_later(world: World) -> None:
    issued = await world.login()
    assert issued.token_type == "Bearer"
    device = KeyHolder()
    rotated = await world.refresh_for(issued.refresh_token or "", await world.key(device))
    # The access token of a request with a proof is bound; the session is not, so a
    # copied bearer refresh token cannot be claimed by whoever proves a key first.
    assert rotated.token_type == "DPoP"
    assert claims_of(rotated.access_token)["cnf"] == {"jkt": device.jkt}
    assert (await world.session(rotated)).dpop_jkt is None
    plain = await world.refresh_for(rotated.refresh_token or "", None)
    assert plain.token_type == "Bearer"
    assert "cnf" not in claims_of(plain.access_token)


async def test_a_confidential_clients_session_is_not_bound_but_its_access_tokens_are(
    world: World,
) -> None:
    server = KeyHolder()
    issued = await world.login(world.confidential, await world.key(server, "/auth/login"))
    assert issued.token_type == "DPoP"
    assert claims_of(issued.access_token)["cnf"] == {"jkt": server.jkt}
    # RFC 9449 §5: its refresh tokens are sender-constrained by its authentication.
    assert (await world.session(issued)).dpop_jkt is None
    other_process = KeyHolder()
    rotated = await world.refresh_for(
        issued.refresh_token or "", await world.key(other_process), world.confidential
    )
    assert claims_of(rotated.access_token)["cnf"] == {"jkt": other_process.jkt}


async def test_a_client_that_requires_dpop_is_refused_without_a_proof_and_keeps_its_token(
    world: World,
) -> None:
    await world.engine.admin.update_rotation("device", RotationSettings(dpop=DpopMode.REQUIRED))
    client = await world.engine.admin.get_client("device")
    with pytest.raises(InvalidDpopProof):
        await world.login(client)
    device = KeyHolder()
    issued = await world.login(client, await world.key(device))
    for attempt in (
        world.refresh_for(issued.refresh_token or "", None),
        world.engine.refresher.refresh(issued.refresh_token or "", client),
    ):
        with pytest.raises(InvalidDpopProof):
            await attempt
    session = await world.session(issued)
    assert (session.generation, session.revoked) == (0, False)
    rotated = await world.refresh_for(issued.refresh_token or "", await world.key(device))
    assert (await world.session(rotated)).generation == 1


async def test_a_client_with_dpop_off_refuses_a_proof_and_issues_bearer_tokens(
    world: World,
) -> None:
    await world.engine.admin.update_rotation("device", RotationSettings(dpop=DpopMode.OFF))
    client = await world.engine.admin.get_client("device")
    with pytest.raises(InvalidDpopProof):
        await world.login(client, await world.key(KeyHolder()))
    issued = await world.login(client)
    with pytest.raises(InvalidDpopProof):
        await world.refresh_for(issued.refresh_token or "", await world.key(KeyHolder()))
    assert (await world.session(issued)).generation == 0
    assert (await world.refresh_for(issued.refresh_token or "", None)).token_type == "Bearer"


async def test_the_dpop_mode_is_stored_and_an_update_keeps_the_rest(world: World) -> None:
    assert world.public.rotation.dpop_mode is DpopMode.OPTIONAL
    await world.engine.admin.update_rotation("device", RotationSettings(dpop=DpopMode.REQUIRED))
    stored = await world.engine.admin.get_client("device")
    assert stored.rotation.dpop is DpopMode.REQUIRED
    assert stored.rotation.kind is ClientKind.NATIVE
    await world.engine.admin.update_rotation("device", RotationSettings(same_key_generations=3))
    again = await world.engine.admin.get_client("device")
    assert (again.rotation.dpop, again.rotation.same_key_generations) == (DpopMode.REQUIRED, 3)


async def test_a_proof_without_the_nonce_is_challenged_and_not_remembered(world: World) -> None:
    device = KeyHolder()
    proof = device.proof(
        htu=world.engine.dpop.uri_of(TOKEN_PATH), iat=int(world.clock.now().timestamp())
    )
    with pytest.raises(UseDpopNonce) as challenge:
        await world.engine.dpop.key_of(ProofRequest((proof,), "POST", TOKEN_PATH))
    assert challenge.value.nonce == world.engine.dpop.nonce()
    with pytest.raises(InvalidDpopProof):  # two DPoP header fields
        await world.engine.dpop.key_of(ProofRequest((proof, proof), "POST", TOKEN_PATH))


async def test_introspection_shows_the_key_of_bound_tokens(world: World) -> None:
    device = KeyHolder()
    issued = await world.login(world.confidential, await world.key(device))
    access = await world.engine.inspection.introspect(issued.access_token, world.confidential)
    assert access["token_type"] == "DPoP"
    assert access["cnf"] == {"jkt": device.jkt}
    # A confidential client's sessions are not bound (see above); one bound by an
    # earlier policy or a migration shows its key on its refresh token too.
    session = await world.session(issued)
    bound = replace(session, id=SessionId(str(uuid.uuid4())), dpop_jkt=device.jkt)
    await world.engine.store.create_session(
        bound, SecurityEvent(type=EventType.SESSION_CREATED, at=world.clock.now())
    )
    token = await world.engine.tokens.encode_refresh(bound, 0)
    refresh = await world.engine.inspection.introspect(token, world.confidential)
    assert refresh["token_type"] == "refresh_token"
    assert refresh["cnf"] == {"jkt": device.jkt}


async def test_a_code_exchanged_with_a_proof_opens_a_bound_session(world: World) -> None:
    await world.engine.admin.add_client(
        "app",
        ClientType.PUBLIC,
        grant_types={GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN},
        scope=frozenset({"read"}),
        redirect_uris=["https://app.test/cb"],
        rotation=RotationSettings(dpop=DpopMode.REQUIRED),
    )
    app = await world.engine.admin.get_client("app")
    verifier = "v" * 43
    request = await world.engine.authorization.check(
        {
            "response_type": ["code"],
            "client_id": ["app"],
            "code_challenge": [s256(verifier)],
            "code_challenge_method": ["S256"],
        }
    )
    code = await world.engine.authorization.grant_code(request, "alice", PASSWORD)
    # Refused for want of a proof before the code is looked at: it is not burnt.
    with pytest.raises(InvalidDpopProof):
        await world.engine.authorization.exchange(app, code, None, verifier)
    device = KeyHolder()
    issued = await world.engine.authorization.exchange(
        app, code, None, verifier, key_thumbprint=await world.key(device)
    )
    assert issued.token_type == "DPoP"
    assert claims_of(issued.access_token)["cnf"] == {"jkt": device.jkt}
    assert (await world.session(issued)).dpop_jkt == device.jkt
