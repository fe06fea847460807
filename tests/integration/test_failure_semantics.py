"""What happens when the store fails (FS rows): never a token that was not stored, never
a hang, nothing half-written, and recovery without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from keyturn.core.errors import SigningUnavailable, StoreUnavailable
from keyturn.core.models import Client
from keyturn.service.engine import Engine
from keyturn.storage.postgres import open_postgres
from support.engine import PASSWORD, FakeClock, engine_with, seed


@pytest.fixture
async def pg_engine(postgres_url: str, pg_schema: str) -> AsyncIterator[tuple[Engine, Client]]:
    engine = await engine_with(postgres_url, schema=pg_schema, db_timeout=1.0)
    _, native, _ = await seed(engine)
    yield engine, native.client
    await engine.close()


async def test_fs06_failure_before_commit_changes_nothing_and_issues_nothing(
    store_url: tuple[str, str | None],
) -> None:
    url, schema = store_url
    engine = await engine_with(url, schema=schema, clock=FakeClock())
    try:
        _, native, _ = await seed(engine)
        tokens = await engine.login.login("alice", PASSWORD, native.client)
        store = engine.store
        # Both ways a rotation commits: the one-round-trip attempt, and the
        # compare-and-swap after a read.
        writes = ("attempt_rotation", "advance_generation")
        originals = {name: getattr(store, name) for name in writes}

        async def failing(*args: object, **kwargs: object) -> bool:
            raise StoreUnavailable(detail="injected before commit")

        for name in writes:
            setattr(store, name, failing)
        with pytest.raises(StoreUnavailable):
            await engine.refresher.refresh(tokens.refresh_token or "", native.client)
        for name, original in originals.items():
            setattr(store, name, original)
        session = await store.get_session(tokens.session_id)  # type: ignore[arg-type]
        assert session is not None
        assert session.generation == 0
        assert not session.revoked
        # RT(g) is still live: no token lost, none duplicated.
        rotated = await engine.refresher.refresh(tokens.refresh_token or "", native.client)
        assert rotated.refresh_token != tokens.refresh_token
    finally:
        await engine.close()


async def test_fs09_a_row_locked_past_the_timeout_is_503_and_unchanged(
    pg_engine: tuple[Engine, Client], postgres_url: str, pg_schema: str
) -> None:
    engine, client = pg_engine
    tokens = await engine.login.login("alice", PASSWORD, client)
    blocker = await asyncpg.connect(postgres_url, server_settings={"search_path": pg_schema})
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT * FROM sessions WHERE id = $1 FOR UPDATE", tokens.session_id)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await engine.refresher.refresh(tokens.refresh_token or "", client)
        assert time.monotonic() - started < 5
        with pytest.raises(StoreUnavailable):
            await engine.sessions.logout(tokens.refresh_token or "", client)
        await holding.rollback()
    finally:
        await blocker.close()
    session = await engine.store.get_session(tokens.session_id)  # type: ignore[arg-type]
    assert session is not None
    assert session.generation == 0
    assert not session.revoked
    assert await engine.refresher.refresh(tokens.refresh_token or "", client)


async def test_fs09_postgres_unreachable_fails_fast_for_every_use_case() -> None:
    store = await open_postgres("postgresql://root@127.0.0.1:1/test", timeout=1.0, pool_size=2)
    started = time.monotonic()
    for operation in (
        store.get_session_with_user("00000000-0000-4000-8000-000000000001"),  # type: ignore[arg-type]
        store.find_user("alice"),
        store.list_keys(),
        store.ping(),
    ):
        with pytest.raises(StoreUnavailable):
            await operation
    assert time.monotonic() - started < 10
    await store.close()


async def test_fs10_the_pool_recovers_after_its_connections_are_killed(
    own_role: tuple[str, str], pg_schema: str, postgres_url: str
) -> None:
    url, role = own_role
    engine = await engine_with(url, schema=pg_schema, db_timeout=1.0)
    try:
        _, native, _ = await seed(engine)
        tokens = await engine.login.login("alice", PASSWORD, native.client)
        admin = await asyncpg.connect(postgres_url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
                role,
            )
        finally:
            await admin.close()
        assert killed >= 1
        await asyncio.sleep(0.2)
        outcomes = []
        for _ in range(3):
            try:
                await engine.store.ping()
                outcomes.append("ok")
            except StoreUnavailable:
                outcomes.append("unavailable")
        assert outcomes[-1] == "ok"
        assert await engine.refresher.refresh(tokens.refresh_token or "", native.client)
    finally:
        await engine.close()


async def test_fs12_tokens_and_grace_replays_survive_a_restart(
    durable_store_url: tuple[str, str | None],
) -> None:
    url, schema = durable_store_url
    first = await engine_with(url, schema=schema)
    _, native, _ = await seed(first)
    rt0 = await first.login.login("alice", PASSWORD, native.client)
    rt1 = await first.refresher.refresh(rt0.refresh_token or "", native.client)
    await first.close()
    # A new process would build exactly this: nothing of a token lives in memory.
    second = await engine_with(url, schema=schema)
    try:
        client = await second.admin.get_client("native")
        replay = await second.refresher.refresh(rt0.refresh_token or "", client)
        assert replay.refresh_token == rt1.refresh_token
        assert await second.refresher.refresh(rt1.refresh_token or "", client)
    finally:
        await second.close()


async def test_at05_signing_failing_after_the_commit_is_503_and_the_retry_converges(
    store_url: tuple[str, str | None],
) -> None:
    url, schema = store_url
    engine = await engine_with(url, schema=schema, clock=FakeClock())
    try:
        _, native, _ = await seed(engine)
        rt0 = (await engine.login.login("alice", PASSWORD, native.client)).refresh_token or ""
        tokens = engine.tokens
        original = tokens.mint_access

        async def no_key(*args: object, **kwargs: object) -> str:
            raise SigningUnavailable(detail="injected: the signing key is unavailable")

        tokens.mint_access = no_key  # type: ignore[method-assign, assignment]
        with pytest.raises(SigningUnavailable):
            await engine.refresher.refresh(rt0, native.client)
        tokens.mint_access = original  # type: ignore[method-assign]
        claims = await tokens.decode_refresh(rt0)
        session = await engine.store.get_session(claims.session_id)
        assert session is not None
        assert session.generation == 1, "the rotation committed before signing failed"
        committed = await tokens.encode_refresh(session, 1)
        # The client retries with the token it still holds: inside the grace window it
        # gets the committed successor and a fresh access token.
        retried = await engine.refresher.refresh(rt0, native.client)
        assert retried.refresh_token == committed
        assert retried.access_token.count(".") == 2
        assert '"alg":"none"' not in retried.access_token
    finally:
        await engine.close()
