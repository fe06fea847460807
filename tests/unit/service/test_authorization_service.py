"""The authorization code use cases on the in-memory store with a clock we move: what
over-HTTP tests cannot reach cheaply (expiry, a user disabled in between)."""

from __future__ import annotations

import pytest

from keyturn.core.audit import EventType
from keyturn.core.errors import InvalidGrant, LoginFailed
from keyturn.core.models import ClientType, GrantType, RevocationReason
from keyturn.crypto.pkce import s256
from keyturn.service.engine import Engine
from support.engine import PASSWORD, FakeClock, engine_with

VERIFIER = "v" * 43
REDIRECT = "https://app.test/cb"


@pytest.fixture
async def world() -> tuple[Engine, FakeClock]:
    clock = FakeClock()
    engine = await engine_with(clock=clock, authorization_code_ttl=60)
    await engine.admin.add_user("alice", PASSWORD)
    await engine.admin.add_client(
        "app",
        ClientType.PUBLIC,
        grant_types={GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN},
        scope=frozenset({"read"}),
        redirect_uris=[REDIRECT],
    )
    return engine, clock


async def a_code(engine: Engine) -> str:
    request = await engine.authorization.check(
        {
            "response_type": ["code"],
            "client_id": ["app"],
            "code_challenge": [s256(VERIFIER)],
            "code_challenge_method": ["S256"],
        }
    )
    return await engine.authorization.grant_code(request, "alice", PASSWORD)


async def test_a_code_expires_after_its_lifetime(world: tuple[Engine, FakeClock]) -> None:
    engine, clock = world
    client = await engine.admin.get_client("app")
    fresh, stale = await a_code(engine), await a_code(engine)
    clock.advance(59)
    assert (await engine.authorization.exchange(client, fresh, None, VERIFIER)).refresh_token
    clock.advance(1)
    with pytest.raises(InvalidGrant):
        await engine.authorization.exchange(client, stale, None, VERIFIER)


async def test_a_user_disabled_after_signing_in_gets_nothing(
    world: tuple[Engine, FakeClock],
) -> None:
    engine, _ = world
    client = await engine.admin.get_client("app")
    code = await a_code(engine)
    await engine.admin.disable_user("alice")
    with pytest.raises(InvalidGrant):
        await engine.authorization.exchange(client, code, None, VERIFIER)
    assert await engine.store.list_sessions() == []


async def test_a_wrong_password_gives_no_code_and_counts_as_a_failed_login(
    world: tuple[Engine, FakeClock],
) -> None:
    engine, _ = world
    request = await engine.authorization.check(
        {
            "response_type": ["code"],
            "client_id": ["app"],
            "code_challenge": [s256(VERIFIER)],
            "code_challenge_method": ["S256"],
        }
    )
    with pytest.raises(LoginFailed):
        await engine.authorization.grant_code(request, "alice", "wrong")
    events = await engine.store.list_events(type=EventType.LOGIN_FAILED.value)
    assert len(events) == 1


async def test_the_second_use_ends_the_session_as_code_reused(
    world: tuple[Engine, FakeClock],
) -> None:
    engine, _ = world
    client = await engine.admin.get_client("app")
    code = await a_code(engine)
    issued = await engine.authorization.exchange(client, code, None, VERIFIER)
    with pytest.raises(InvalidGrant):
        await engine.authorization.exchange(client, code, None, VERIFIER)
    assert issued.session_id is not None
    session = await engine.store.get_session(issued.session_id)
    assert session is not None
    assert session.revoked_reason is RevocationReason.CODE_REPLAYED
    reuse = await engine.store.list_events(type=EventType.REUSE_DETECTED.value)
    assert [e.event.reason for e in reuse] == ["code_replayed"]


async def test_the_session_keeps_when_the_user_signed_in(
    world: tuple[Engine, FakeClock],
) -> None:
    engine, clock = world
    client = await engine.admin.get_client("app")
    signed_in_at = clock.now()
    code = await a_code(engine)
    clock.advance(30)
    issued = await engine.authorization.exchange(client, code, None, VERIFIER)
    assert issued.session_id is not None
    session = await engine.store.get_session(issued.session_id)
    assert session is not None
    assert session.auth_time == signed_in_at
    assert session.created_at == clock.now()
