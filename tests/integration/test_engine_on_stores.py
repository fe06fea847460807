"""The engine on every real store: the checklist rows of rotation, reuse and session
termination (RT, SL) proven on SQLite and PostgreSQL, plus what must never be at rest."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pytest

from keyturn.core.audit import EventType
from keyturn.core.errors import InvalidGrant, LoginFailed
from keyturn.core.models import Client, RevocationReason, Session
from keyturn.service.engine import Engine
from keyturn.service.results import IssuedTokens
from support.engine import PASSWORD, FakeClock, count_calls, engine_with, seed


@dataclass
class World:
    url: str
    schema: str | None
    engine: Engine
    clock: FakeClock
    native: Client
    conf: Client

    async def login(self) -> IssuedTokens:
        return await self.engine.login.login("alice", PASSWORD, self.native)

    async def refresh(self, tokens: IssuedTokens, client: Client | None = None) -> IssuedTokens:
        return await self.engine.refresher.refresh(
            tokens.refresh_token or "", client or self.native
        )

    async def session(self, tokens: IssuedTokens) -> Session:
        found = await self.engine.store.get_session(tokens.session_id)  # type: ignore[arg-type]
        assert found is not None
        return found


async def _world(url: str, schema: str | None) -> World:
    clock = FakeClock()
    engine = await engine_with(url, clock=clock, schema=schema)
    _, native, conf = await seed(engine)
    return World(url, schema, engine, clock, native.client, conf.client)


@pytest.fixture
async def durable_world(durable_store_url: tuple[str, str | None]) -> AsyncIterator[World]:
    made = await _world(*durable_store_url)
    yield made
    await made.engine.close()


@pytest.fixture
async def world(store_url: tuple[str, str | None]) -> AsyncIterator[World]:
    url, schema = store_url
    clock = FakeClock()
    engine = await engine_with(url, clock=clock, schema=schema)
    _, native, conf = await seed(engine)
    yield World(url, schema, engine, clock, native.client, conf.client)
    await engine.close()


async def test_rt01_rt02_rotation_then_five_identical_replays(world: World) -> None:
    rt0 = await world.login()
    rt1 = await world.refresh(rt0)
    assert rt1.refresh_token != rt0.refresh_token
    jtis = set()
    for _ in range(5):
        world.clock.advance(1)
        again = await world.refresh(rt0)
        assert again.refresh_token == rt1.refresh_token
        jtis.add(again.access_token)
    assert len(jtis) == 5
    assert (await world.session(rt1)).generation == 1


async def test_rt03_rt04_reuse_ends_the_session_and_a_fresh_engine_sees_it(
    durable_world: World,
) -> None:
    world = durable_world
    rt0 = await world.login()
    rt1 = await world.refresh(rt0)
    world.clock.advance(11)
    with pytest.raises(InvalidGrant):
        await world.refresh(rt0)
    with pytest.raises(InvalidGrant):
        await world.refresh(rt1)
    # A new engine, new connections, as after a restart: the revocation was committed.
    fresh = await engine_with(world.url, schema=world.schema)
    try:
        stored = await fresh.store.get_session(rt1.session_id)  # type: ignore[arg-type]
        assert stored is not None
        assert stored.revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
        events = await fresh.store.list_events(type=EventType.REUSE_DETECTED.value)
        assert [e.event.session_id for e in events] == [rt1.session_id]
    finally:
        await fresh.close()


async def test_rt07_cross_client_live_and_stale_tokens_leave_the_session(world: World) -> None:
    rt0 = await world.login()
    rt1 = await world.refresh(rt0)
    world.clock.advance(11)
    for token in (rt1, rt0):
        with pytest.raises(InvalidGrant):
            await world.refresh(token, world.conf)
    assert not (await world.session(rt1)).revoked
    assert await world.refresh(rt1)


@pytest.mark.parametrize(
    "garbage",
    ["kt_rt_" + "A" * 40, "no prefix at all", "x" * 4096, "kt_rt_" + "A" * 79],
)
async def test_rt08_garbage_is_refused_without_any_query(world: World, garbage: str) -> None:
    calls = count_calls(world.engine.store)
    with pytest.raises(InvalidGrant):
        await world.engine.refresher.refresh(garbage, world.native)
    assert calls == []


async def test_rt09_tampered_mac_or_checksum_leaves_the_session(world: World) -> None:
    rt0 = await world.login()
    token = rt0.refresh_token or ""
    for position in (-3, -10, -20):  # checksum, then into the MAC
        ch = token[position]
        flipped = token[:position] + ("A" if ch != "A" else "B") + token[position + 1 :]
        with pytest.raises(InvalidGrant):
            await world.engine.refresher.refresh(flipped, world.native)
    session = await world.session(rt0)
    assert session.generation == 0
    assert not session.revoked
    assert await world.refresh(rt0)


async def test_rt11_generation_ahead_is_refused_and_alerted_not_revoked(world: World) -> None:
    rt0 = await world.login()
    before = await world.session(rt0)
    ahead = await world.engine.tokens.encode_refresh(before, 3)
    world.clock.advance(5)
    with pytest.raises(InvalidGrant):
        await world.engine.refresher.refresh(ahead, world.native)
    session = await world.session(rt0)
    assert not session.revoked
    assert session == before  # not extended, not advanced: nothing changed
    events = await world.engine.store.list_events(type=EventType.FUTURE_GENERATION_PRESENTED.value)
    assert len(events) == 1


async def test_rt12_idle_timeout_extends_on_use_and_ends_an_idle_session() -> None:
    clock = FakeClock()
    engine = await engine_with(clock=clock, session_idle_ttl=60, session_max_ttl=300)
    try:
        _, native, _ = await seed(engine)
        used = await engine.login.login("alice", PASSWORD, native.client)
        idle = await engine.login.login("alice", PASSWORD, native.client)
        clock.advance(59)
        used = await engine.refresher.refresh(used.refresh_token or "", native.client)
        stored = await engine.store.get_session(used.session_id)  # type: ignore[arg-type]
        assert stored is not None
        assert stored.idle_expires_at == clock.now() + timedelta(seconds=60)
        clock.advance(2)
        with pytest.raises(InvalidGrant):
            await engine.refresher.refresh(idle.refresh_token or "", native.client)
        ended = await engine.store.get_session(idle.session_id)  # type: ignore[arg-type]
        assert ended is not None
        assert ended.revoked_reason is RevocationReason.IDLE_EXPIRED
    finally:
        await engine.close()


async def test_rt13_absolute_lifetime_ends_a_session_in_constant_use() -> None:
    clock = FakeClock()
    engine = await engine_with(clock=clock, session_idle_ttl=60, session_max_ttl=300)
    try:
        _, native, _ = await seed(engine)
        tokens = await engine.login.login("alice", PASSWORD, native.client)
        started = clock.now()
        refused_at = None
        for _ in range(12):
            clock.advance(30)
            try:
                tokens = await engine.refresher.refresh(tokens.refresh_token or "", native.client)
            except InvalidGrant:
                refused_at = clock.now()
                break
            payload = tokens.access_token.split(".")[1]
            exp = int(json.loads(base64.urlsafe_b64decode(payload + "=="))["exp"])
            assert exp <= (started + timedelta(seconds=300)).timestamp()
        assert refused_at == started + timedelta(seconds=300)
        ended = await engine.store.get_session(tokens.session_id)  # type: ignore[arg-type]
        assert ended is not None
        assert ended.revoked_reason is RevocationReason.ABSOLUTE_EXPIRED
    finally:
        await engine.close()


async def test_sl04_password_change_keeps_this_session_only(world: World) -> None:
    this, other = await world.login(), await world.login()
    user_id = (await world.session(this)).user_id
    with pytest.raises(LoginFailed):
        await world.engine.sessions.change_password(
            user_id, "not the password", "a brand new passphrase", keep=this.session_id
        )
    assert not (await world.session(other)).revoked
    await world.engine.sessions.change_password(
        user_id, PASSWORD, "a brand new passphrase", keep=this.session_id
    )
    world.clock.advance(1)
    assert await world.refresh(this)
    with pytest.raises(InvalidGrant):
        await world.refresh(other)


async def test_sl06_disable_user_and_admin_revoke(world: World) -> None:
    a, b = await world.login(), await world.login()
    await world.engine.admin.revoke_session(a.session_id or "")
    with pytest.raises(InvalidGrant):
        await world.refresh(a)
    assert await world.refresh(b)
    await world.engine.admin.disable_user("alice")
    with pytest.raises(InvalidGrant):
        await world.refresh(b)
    with pytest.raises(LoginFailed):
        await world.login()


async def _all_bytes(world: World) -> bytes:
    """Everything the database holds, as bytes."""
    if world.url.startswith("sqlite:///"):
        path = world.url.removeprefix("sqlite:///")
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA wal_checkpoint(FULL)")
            return b"\n".join(line.encode() for line in db.iterdump())
        finally:
            db.close()
    conn = await asyncpg.connect(world.url, server_settings={"search_path": world.schema or ""})
    try:
        dump = []
        for table in ("users", "clients", "sessions", "signing_keys", "audit_events"):
            for row in await conn.fetch(f"SELECT * FROM {table}"):  # noqa: S608 - fixed names
                dump.append(repr(tuple(row)).encode())
        return b"\n".join(dump)
    finally:
        await conn.close()


async def test_pw07_no_refresh_token_password_or_private_key_is_ever_at_rest(
    durable_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world = durable_world
    caplog.set_level(logging.DEBUG)
    issued = [await world.login()]
    for _ in range(3):
        issued.append(await world.refresh(issued[-1]))
    world.clock.advance(11)
    with pytest.raises(InvalidGrant):
        await world.refresh(issued[0])
    await asyncio.sleep(0)
    at_rest = await _all_bytes(world)
    logged = caplog.text.encode()
    for tokens in issued:
        token = (tokens.refresh_token or "").encode()
        raw = base64.urlsafe_b64decode(token[len("kt_rt_") :] + b"=")
        mac = raw[-28:-4]
        for haystack in (at_rest, logged):
            assert token not in haystack
            assert token[len("kt_rt_") :][:40] not in haystack
            assert mac not in haystack
            assert tokens.access_token.encode() not in haystack
    assert PASSWORD.encode() not in at_rest
    assert b"PRIVATE KEY" not in at_rest


async def test_pw07_every_security_event_says_when_who_and_why_and_holds_no_secret(
    durable_world: World,
) -> None:
    world = durable_world
    with pytest.raises(LoginFailed):
        await world.engine.login.login("alice", "a wrong password", world.native)
    first = await world.login()
    second = await world.refresh(first)
    await world.refresh(second)
    with pytest.raises(InvalidGrant):
        await world.refresh(first)  # two generations behind: reuse
    events = [recorded.event for recorded in await world.engine.store.list_events()]
    kinds = {e.type for e in events}
    assert {EventType.LOGIN_FAILED, EventType.LOGIN_SUCCEEDED, EventType.REUSE_DETECTED} <= kinds
    for event in events:
        assert event.at.tzinfo is not None
        assert event.at.utcoffset() == timedelta(0), "audit times are UTC"
        text = repr(event)
        assert "a wrong password" not in text
        assert PASSWORD not in text
        for tokens in (first, second):
            assert (tokens.refresh_token or "")[6:30] not in text
            assert tokens.access_token[-30:] not in text
    reuse = next(e for e in events if e.type is EventType.REUSE_DETECTED)
    assert reuse.session_id == first.session_id
    assert reuse.client_id == world.native.id
    assert reuse.reason == RevocationReason.REUSE_OUTSIDE_WINDOW.value
    failed = next(e for e in events if e.type is EventType.LOGIN_FAILED)
    assert failed.client_id == world.native.id
    assert failed.reason == "bad_credentials"
