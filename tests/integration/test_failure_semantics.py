"""What happens when the store fails (FS rows): never a token that was not stored, never
a hang, nothing half-written, and recovery without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from keyturn.core.errors import StoreUnavailable
from keyturn.core.models import Client
from keyturn.storage.postgres import open_postgres
from keyturn.wiring import Engine
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
        original = store.advance_generation

        async def failing(*args: object, **kwargs: object) -> bool:
            raise StoreUnavailable(detail="injected before commit")

        store.advance_generation = failing  # type: ignore[method-assign, assignment]
        with pytest.raises(StoreUnavailable):
            await engine.refresher.refresh(tokens.refresh_token or "", native.client)
        store.advance_generation = original  # type: ignore[method-assign]
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
    pg_engine: tuple[Engine, Client], postgres_url: str
) -> None:
    engine, client = pg_engine
    tokens = await engine.login.login("alice", PASSWORD, client)
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'keyturn' AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    await asyncio.sleep(0.2)
    outcomes = []
    for _ in range(3):
        try:
            await engine.store.ping()
            outcomes.append("ok")
        except StoreUnavailable:
            outcomes.append("unavailable")
    assert outcomes[-1] == "ok"
    assert await engine.refresher.refresh(tokens.refresh_token or "", client)


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
