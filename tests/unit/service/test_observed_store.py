"""Every way a session ends is announced to the store's observers, with its reason, and
only once it committed; rotations and security events are announced too."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import SessionId
from keyturn.core.models import Client, ClientType, EndedSession, GrantType, RevocationReason
from keyturn.crypto.pkce import s256
from keyturn.service.engine import Engine
from keyturn.service.results import IssuedTokens
from support.engine import PASSWORD, FakeClock, engine_with, seed


class Recorder:
    def __init__(self) -> None:
        self.ended: list[tuple[list[SessionId], RevocationReason]] = []
        self.rotations = 0
        self.events: list[EventType] = []

    async def rotated(self, session_id: SessionId) -> None:
        self.rotations += 1

    async def revoked(
        self, ended: Sequence[EndedSession], reason: RevocationReason, at: datetime
    ) -> None:
        self.ended.append(([e.id for e in ended], reason))

    async def recorded(self, event: SecurityEvent) -> None:
        self.events.append(event.type)


class World:
    def __init__(self, engine: Engine, recorder: Recorder, native: Client) -> None:
        self.engine, self.recorder, self.native = engine, recorder, native

    async def login(self, username: str = "alice") -> IssuedTokens:
        return await self.engine.login.login(username, PASSWORD, self.native)

    def last(self) -> tuple[list[SessionId], RevocationReason]:
        return self.recorder.ended[-1]


@pytest.fixture
async def world() -> World:
    recorder = Recorder()
    engine = await engine_with(clock=FakeClock(), observers=[recorder])
    _, native, _ = await seed(engine)
    await engine.admin.add_user("bob", PASSWORD)
    return World(engine, recorder, native.client)


async def test_logout_and_logout_all(world: World) -> None:
    one = await world.login()
    await world.engine.sessions.logout(one.refresh_token or "", world.native)
    assert world.last() == ([one.session_id], RevocationReason.LOGOUT)
    a, b = await world.login(), await world.login()
    session = await world.engine.store.get_session(a.session_id)  # type: ignore[arg-type]
    assert session is not None
    await world.engine.sessions.end_all(session.user_id)
    ended, reason = world.last()
    assert set(ended) == {a.session_id, b.session_id}
    assert reason is RevocationReason.LOGOUT_ALL


async def test_reuse_is_announced_and_rotations_counted(world: World) -> None:
    first = await world.login()
    second = await world.engine.refresher.refresh(first.refresh_token or "", world.native)
    await world.engine.refresher.refresh(second.refresh_token or "", world.native)
    assert world.recorder.rotations == 2
    with pytest.raises(InvalidGrant):
        await world.engine.refresher.refresh(first.refresh_token or "", world.native)
    assert world.last() == ([first.session_id], RevocationReason.REUSE_OUTSIDE_WINDOW)
    assert EventType.REUSE_DETECTED in world.recorder.events


async def test_admin_password_and_disabling(world: World) -> None:
    admin_ended = await world.login()
    await world.engine.admin.revoke_session(admin_ended.session_id or "")
    assert world.last() == ([admin_ended.session_id], RevocationReason.ADMIN_REVOKED)
    kept, other = await world.login("bob"), await world.login("bob")
    bob = await world.engine.store.find_user("bob")
    assert bob is not None
    await world.engine.sessions.change_password(
        bob.id, PASSWORD, "a new and long enough passphrase", keep=kept.session_id
    )
    assert world.last() == ([other.session_id], RevocationReason.PASSWORD_CHANGED)
    doomed = await world.login()
    await world.engine.admin.disable_user("alice")
    assert world.last() == ([doomed.session_id], RevocationReason.USER_DISABLED)


async def test_disabling_a_client(world: World) -> None:
    engine = world.engine
    await engine.admin.add_client(
        "temp", ClientType.PUBLIC, grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN}
    )
    temp = await engine.admin.get_client("temp")
    made = await engine.login.login("alice", PASSWORD, temp)
    await engine.admin.disable_client("temp")
    assert world.last() == ([made.session_id], RevocationReason.CLIENT_DISABLED)


async def test_a_second_use_of_a_code_is_announced(world: World) -> None:
    engine = world.engine
    await engine.admin.add_client(
        "app",
        ClientType.PUBLIC,
        grant_types={GrantType.AUTHORIZATION_CODE},
        redirect_uris=["https://app.test/cb"],
    )
    verifier = "v" * 43
    request = await engine.authorization.check(
        {
            "response_type": ["code"],
            "client_id": ["app"],
            "code_challenge": [s256(verifier)],
            "code_challenge_method": ["S256"],
        }
    )
    code = await engine.authorization.grant_code(request, "alice", PASSWORD)
    app = await engine.admin.get_client("app")
    issued = await engine.authorization.exchange(app, code, None, verifier)
    with pytest.raises(InvalidGrant):
        await engine.authorization.exchange(app, code, None, verifier)
    assert world.last() == ([issued.session_id], RevocationReason.CODE_REPLAYED)


async def test_nothing_is_announced_for_what_did_not_change(world: World) -> None:
    tokens = await world.login()
    await world.engine.sessions.logout(tokens.refresh_token or "", world.native)
    before = len(world.recorder.ended)
    await world.engine.sessions.logout(tokens.refresh_token or "", world.native)
    assert len(world.recorder.ended) == before


async def test_a_failing_observer_never_fails_the_operation(world: World) -> None:
    class Broken(Recorder):
        async def revoked(
            self, session_ids: Sequence[SessionId], reason: RevocationReason, at: datetime
        ) -> None:
            raise RuntimeError("observer down")

    engine = await engine_with(observers=[Broken()])
    _, native, _ = await seed(engine)
    tokens = await engine.login.login("alice", PASSWORD, native.client)
    await engine.sessions.logout(tokens.refresh_token or "", native.client)
    session = await engine.store.get_session(tokens.session_id)  # type: ignore[arg-type]
    assert session is not None
    assert session.revoked
