"""The PostgreSQL store beyond the contract suite: what only a real PostgreSQL shows.

A database that is down, comes back, stops answering, holds a row lock or kills our
connections; text PostgreSQL cannot hold; purges that skip locked rows; rotations that
are HOT updates; and the mapping of every transient failure to `StoreUnavailable`.
Tests that need PostgreSQL skip when it is unreachable, and fail in CI (see
tests/conftest.py); the ones that point at a closed port or a silent server need none.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlparse

import asyncpg
import pytest

from keyturn.core.audit import EventType
from keyturn.core.errors import AlreadyExists, InvalidRequest, NotFound, StoreUnavailable
from keyturn.core.ids import ClientId, KeyId, SessionId, UserId
from keyturn.core.models import (
    Client,
    Device,
    EndedSession,
    KeyState,
    KeyUse,
    RevocationReason,
    Session,
    StoredKey,
    User,
)
from keyturn.service.guarded_store import GuardedStore
from keyturn.storage.postgres import PostgresStore, open_postgres
from support.store_values import T0, a_client, a_session, a_user, an_event
from support.tcp_proxy import TcpProxy

TIMEOUT = 1.0
CLOSED_PORT_URL = "postgresql://root@127.0.0.1:1/test"
HOSTILE = ["a\x00b", "\x00", "\ud800", "x\udfffy"]
Seeded = tuple[PostgresStore, User, Client, Session]


# Fixtures and helpers


@contextlib.asynccontextmanager
async def admin(url: str, schema: str | None = None) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, outside any store."""
    settings = {"search_path": schema} if schema else {}
    conn = await asyncpg.connect(url, timeout=5, server_settings=settings)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def store(postgres_url: str, pg_schema: str) -> AsyncIterator[PostgresStore]:
    opened = await open_postgres(postgres_url, timeout=TIMEOUT, pool_size=4, schema=pg_schema)
    yield opened
    await opened.close()


async def seed(store: PostgresStore) -> tuple[User, Client, Session]:
    user, client = a_user(), a_client()
    await store.add_user(user, an_event(EventType.USER_CREATED))
    await store.add_client(client, an_event(EventType.CLIENT_CREATED))
    session = a_session(user, client)
    await store.create_session(session, an_event(EventType.SESSION_CREATED))
    return user, client, session


@pytest.fixture
async def seeded(store: PostgresStore) -> Seeded:
    return (store, *await seed(store))


async def backends(postgres_url: str, role: str) -> set[int]:
    """The keyturn backends of `role`."""
    async with admin(postgres_url) as conn:
        found = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'keyturn' AND usename = $1",
            role,
        )
    return {r["pid"] for r in found}


async def terminate(postgres_url: str, role: str) -> set[int]:
    """Kill the keyturn backends of `role` (and no one else's); returns their pids."""
    victims = await backends(postgres_url, role)
    async with admin(postgres_url) as conn:
        # Chosen first, killed second: inside one WHERE, PostgreSQL may call
        # pg_terminate_backend before it has checked the other conditions.
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", list(victims)
        )
    return victims


async def elapsed(operation: Awaitable[Any]) -> tuple[float, BaseException | None]:
    """Seconds `operation` took and what it raised; a hang fails the test after 10 s."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(10):
            await operation
    except TimeoutError:
        pytest.fail("the operation hung")
    except Exception as error:
        return time.monotonic() - started, error
    return time.monotonic() - started, None


def every_operation(
    store: PostgresStore, user: User, client: Client, session: Session
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of every method of the `Store` port."""
    at = T0 + timedelta(minutes=1)
    key = StoredKey(
        kid=KeyId("k1"),
        use=KeyUse.SIGNING,
        alg="EdDSA",
        state=KeyState.ACTIVE,
        public_jwk="{}",
        encrypted_private=b"sealed",
        created_at=T0,
    )
    return {
        "add_user": lambda: store.add_user(a_user("bob"), an_event()),
        "get_user": lambda: store.get_user(user.id),
        "find_user": lambda: store.find_user(user.username),
        "list_users": store.list_users,
        "disable_user": lambda: store.disable_user(user.id, at, an_event()),
        "change_password": lambda: store.change_password(user.id, "h", at, None, an_event()),
        "add_client": lambda: store.add_client(a_client("other"), an_event()),
        "get_client": lambda: store.get_client(client.id),
        "list_clients": store.list_clients,
        "disable_client": lambda: store.disable_client(client.id, at, an_event()),
        "create_session": lambda: store.create_session(a_session(user, client), an_event()),
        "get_session": lambda: store.get_session(session.id),
        "get_session_with_user": lambda: store.get_session_with_user(session.id),
        "advance_generation": lambda: store.advance_generation(session.id, 0, at, at),
        "revoke_session": lambda: store.revoke_session(
            session.id, RevocationReason.LOGOUT, at, an_event()
        ),
        "revoke_user_sessions": lambda: store.revoke_user_sessions(
            user.id, RevocationReason.LOGOUT_ALL, at, an_event()
        ),
        "list_sessions": lambda: store.list_sessions(user.id),
        "purge_expired": lambda: store.purge_expired(at, 0, 10),
        "list_keys": store.list_keys,
        "save_keys": lambda: store.save_keys([key], [an_event(EventType.KEY_CREATED)]),
        "delete_keys": lambda: store.delete_keys([key.kid]),
        "record": lambda: store.record(an_event()),
        "list_events": store.list_events,
        "ping": store.ping,
    }


# Opening


async def test_both_url_schemes_open_the_store(postgres_url: str, pg_schema: str) -> None:
    for url in (postgres_url, "postgres://" + postgres_url.split("://", 1)[1]):
        opened = await open_postgres(url, timeout=TIMEOUT, pool_size=1, schema=pg_schema)
        try:
            await opened.ping()
            assert await opened.list_users() == []
        finally:
            await opened.close()


@pytest.mark.parametrize(
    ("dsn", "timeout", "pool_size"),
    [("mysql://root@127.0.0.1/test", 1.0, 1), (CLOSED_PORT_URL, 0, 1), (CLOSED_PORT_URL, 1.0, 0)],
)
async def test_open_rejects_what_cannot_work(dsn: str, timeout: float, pool_size: int) -> None:
    with pytest.raises(ValueError, match=r"postgres|timeout|pool_size"):
        await open_postgres(dsn, timeout=timeout, pool_size=pool_size)


async def test_connections_are_named_keyturn_and_never_exceed_the_pool_size(
    own_role: tuple[str, str], postgres_url: str, pg_schema: str
) -> None:
    url, role = own_role
    opened = await open_postgres(url, timeout=TIMEOUT, pool_size=2, schema=pg_schema)
    try:
        await asyncio.gather(*(opened.find_user(f"u{i}") for i in range(40)))
        async with admin(postgres_url) as conn:
            names = await conn.fetch(
                "SELECT application_name FROM pg_stat_activity WHERE usename = $1", role
            )
        assert 1 <= len(names) <= 2
        assert {r["application_name"] for r in names} == {"keyturn"}
    finally:
        await opened.close()


# (a) PostgreSQL unreachable


async def test_every_operation_on_a_closed_port_is_unavailable_within_the_timeout() -> None:
    opened = await open_postgres(CLOSED_PORT_URL, timeout=TIMEOUT, pool_size=2)
    user, client = a_user(), a_client()
    try:
        for name, operation in every_operation(
            opened, user, client, a_session(user, client)
        ).items():
            took, error = await elapsed(operation())
            assert isinstance(error, StoreUnavailable), (name, error)
            assert took < 2 * TIMEOUT, (name, took)
    finally:
        await opened.close()


async def test_a_server_that_never_answers_is_unavailable_within_the_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    opened = await open_postgres(
        f"postgresql://root@127.0.0.1:{port}/test", timeout=0.3, pool_size=2
    )
    user, client = a_user(), a_client()
    operations = every_operation(opened, user, client, a_session(user, client))
    try:
        for name in ("ping", "get_session_with_user", "advance_generation", "revoke_session"):
            took, error = await elapsed(operations[name]())
            assert isinstance(error, StoreUnavailable), (name, error)
            assert took < 1.5, (name, took)
    finally:
        await opened.close()
        silent.close()
        # Closing the listener leaves the connections it accepted open (Python 3.11).
        for writer in accepted:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await silent.wait_closed()


# Recovery: the database goes away, returns, stops answering


async def test_a_database_down_at_start_is_used_once_it_is_up(
    postgres_url: str, pg_schema: str
) -> None:
    target = urlparse(postgres_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    opened = await open_postgres(proxy.url(), timeout=TIMEOUT, pool_size=2, schema=pg_schema)
    try:
        took, error = await elapsed(opened.ping())
        assert isinstance(error, StoreUnavailable)
        assert took < TIMEOUT
        await proxy.start()
        # No restart, no reopen: the next operation connects.
        await opened.add_user(a_user(), an_event(EventType.USER_CREATED))
        assert [u.username for u in await opened.list_users()] == ["alice"]
    finally:
        await opened.close()
        await proxy.stop()


async def test_a_database_that_goes_away_and_returns_is_used_again_without_a_restart(
    postgres_url: str, pg_schema: str
) -> None:
    target = urlparse(postgres_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    opened = await open_postgres(proxy.url(), timeout=TIMEOUT, pool_size=3, schema=pg_schema)
    try:
        _, _, session = await seed(opened)
        await asyncio.gather(*(opened.ping() for _ in range(3)))  # several live connections
        await proxy.stop()
        for operation in (
            opened.get_session(session.id),
            opened.advance_generation(session.id, 0, T0, T0 + timedelta(hours=1)),
        ):
            took, error = await elapsed(operation)
            assert isinstance(error, StoreUnavailable)
            assert took < TIMEOUT
        await proxy.start()
        # The first write after the return succeeds: the pool dropped the dead connections.
        assert await opened.advance_generation(session.id, 0, T0, T0 + timedelta(hours=1))
        stored = await opened.get_session(session.id)
        assert stored is not None
        assert stored.generation == 1
    finally:
        await opened.close()
        await proxy.stop()


async def test_a_database_that_stops_answering_is_unavailable_and_then_used_again(
    postgres_url: str, pg_schema: str
) -> None:
    target = urlparse(postgres_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    opened = await open_postgres(proxy.url(), timeout=0.5, pool_size=2, schema=pg_schema)
    try:
        _, _, session = await seed(opened)
        proxy.freeze()
        for operation in (
            opened.get_session(session.id),
            opened.advance_generation(session.id, 0, T0, T0 + timedelta(hours=1)),
            opened.revoke_session(session.id, RevocationReason.LOGOUT, T0, an_event()),
        ):
            took, error = await elapsed(operation)
            assert isinstance(error, StoreUnavailable)
            # command_timeout (2 × timeout) on a live connection; the connect timeout on
            # a new one.
            assert took < 2 * 0.5 + 0.5
        proxy.thaw()
        await opened.ping()
        stored = await opened.get_session(session.id)
        assert stored is not None
        # Statements held in the network may still land when it heals: that is why
        # `StoreUnavailable` promises nothing about what was written. At most once each.
        assert stored.generation in {0, 1}
    finally:
        await opened.close()
        await proxy.stop()


# (b) a row lock held past lock_timeout


async def test_a_row_locked_past_the_lock_timeout_is_unavailable_and_left_unchanged(
    seeded: Seeded, postgres_url: str, pg_schema: str
) -> None:
    store, _, _, session = seeded
    idle = T0 + timedelta(hours=2)
    async with admin(postgres_url, pg_schema) as blocker:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session.id)
        for operation in (
            store.advance_generation(session.id, 0, T0, idle),
            store.revoke_session(
                session.id,
                RevocationReason.REUSE_OUTSIDE_WINDOW,
                T0,
                an_event(EventType.REUSE_DETECTED),
            ),
        ):
            took, error = await elapsed(operation)
            assert isinstance(error, StoreUnavailable)
            assert 0.8 * TIMEOUT <= took < 2 * TIMEOUT  # waited for lock_timeout, no longer
        await holding.rollback()
    assert await store.get_session(session.id) == session
    # The revocation and its audit row are one statement: neither was written.
    assert await store.list_events(type=EventType.REUSE_DETECTED.value) == []
    assert await store.advance_generation(session.id, 0, T0, idle)


async def test_a_table_locked_by_a_migration_makes_reads_unavailable_not_slow(
    seeded: Seeded, postgres_url: str, pg_schema: str
) -> None:
    store, _, _, session = seeded
    async with admin(postgres_url, pg_schema) as blocker:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        took, error = await elapsed(store.get_session_with_user(session.id))
        await holding.rollback()
    assert isinstance(error, StoreUnavailable)
    assert took < 2 * TIMEOUT
    assert await store.get_session_with_user(session.id) is not None


# (c) backends terminated under the pool


async def test_terminated_backends_are_replaced_by_the_pool(
    own_role: tuple[str, str], postgres_url: str, pg_schema: str
) -> None:
    url, role = own_role
    opened = await open_postgres(url, timeout=TIMEOUT, pool_size=4, schema=pg_schema)
    try:
        _, _, session = await seed(opened)
        generation = 0
        killed: set[int] = set()
        for round_ in range(6):
            await asyncio.gather(*(opened.ping() for _ in range(4)))
            victims = await terminate(postgres_url, role)
            assert victims, "the store had no backend to terminate"
            killed |= victims
            if round_ % 2:
                await asyncio.sleep(0.2)  # let the pool see the connections close
            # Right after the kill: an answer, or StoreUnavailable; never a wrong answer.
            with contextlib.suppress(StoreUnavailable):
                assert await opened.get_session(session.id) is not None
            advanced: bool | None = None
            with contextlib.suppress(StoreUnavailable):
                advanced = await opened.advance_generation(
                    session.id, generation, T0, T0 + timedelta(hours=1)
                )
            # And the operation after that one succeeds.
            stored = await opened.get_session(session.id)
            assert stored is not None
            if advanced is None:  # lost in flight: it may or may not have committed
                assert stored.generation in {generation, generation + 1}
            else:
                assert advanced
                assert stored.generation == generation + 1
            generation = stored.generation
        assert await opened.advance_generation(session.id, generation, T0, T0 + timedelta(hours=1))
        assert not (await backends(postgres_url, role)) & killed
    finally:
        await opened.close()


# (d) text PostgreSQL cannot hold, answered by the guard in front of every store


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_lookups_by_text_postgresql_cannot_hold_find_nothing_without_a_query(
    hostile: str,
) -> None:
    # A store on a closed port: any query would raise StoreUnavailable.
    bare = await open_postgres(CLOSED_PORT_URL, timeout=TIMEOUT, pool_size=1)
    opened = GuardedStore(bare)
    at = T0
    try:
        assert await opened.get_user(UserId(hostile)) is None
        assert await opened.find_user(hostile) is None
        assert await opened.get_client(ClientId(hostile)) is None
        assert await opened.get_session(SessionId(hostile)) is None
        assert await opened.get_session_with_user(SessionId(hostile)) is None
        assert not await opened.advance_generation(SessionId(hostile), 0, at, at)
        assert await opened.list_sessions(UserId(hostile), include_revoked=True) == []
        assert await opened.list_events(type=hostile) == []
        await opened.delete_keys([KeyId(hostile)])
        with pytest.raises(NotFound):
            await opened.disable_user(UserId(hostile), at, an_event())
        with pytest.raises(NotFound):
            await opened.disable_client(ClientId(hostile), at, an_event())
        with pytest.raises(NotFound):
            await opened.change_password(UserId(hostile), "h", at, None, an_event())
    finally:
        await bare.close()


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_revoking_by_such_text_revokes_nothing_and_records_the_event(
    seeded: Seeded, hostile: str
) -> None:
    bare, user, _, session = seeded
    store = GuardedStore(bare)
    event = an_event(EventType.SESSION_REVOKED, session_id=SessionId(hostile))
    assert not await store.revoke_session(
        SessionId(hostile), RevocationReason.ADMIN_REVOKED, T0, event
    )
    assert (
        await store.revoke_user_sessions(UserId(hostile), RevocationReason.ADMIN_REVOKED, T0, event)
        == []
    )
    # A `keep` that names no session keeps none.
    assert await store.revoke_user_sessions(
        user.id, RevocationReason.LOGOUT_ALL, T0, an_event(), keep=SessionId(hostile)
    ) == [EndedSession(session.id, session.client_id)]
    recorded = await store.list_events(type=EventType.SESSION_REVOKED.value)
    assert len(recorded) == 3
    assert recorded[0].event.session_id is not None
    assert "\ufffd" in recorded[0].event.session_id


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_inserts_holding_text_postgresql_cannot_hold_are_invalid_and_write_nothing(
    seeded: Seeded, hostile: str
) -> None:
    bare, user, client, _ = seeded
    store = GuardedStore(bare)
    events_before = await store.list_events()
    sessions_before = await store.list_sessions(include_revoked=True)
    key = StoredKey(
        kid=KeyId(hostile),
        use=KeyUse.SIGNING,
        alg="EdDSA",
        state=KeyState.NEXT,
        public_jwk="{}",
        encrypted_private=b"sealed",
        created_at=T0,
    )
    attempts: list[Awaitable[Any]] = [
        store.add_user(a_user(hostile), an_event()),
        store.add_user(replace(a_user("bob"), password_hash=hostile), an_event()),
        store.add_client(a_client(hostile), an_event()),
        store.add_client(replace(a_client("web"), redirect_uris=(hostile,)), an_event()),
        store.add_client(replace(a_client("web"), audience=(hostile,)), an_event()),
        store.create_session(
            a_session(user, client, device=Device(user_agent=hostile)), an_event()
        ),
        store.create_session(a_session(user, client, scope=frozenset({hostile})), an_event()),
        store.save_keys([key], [an_event(EventType.KEY_CREATED)]),
        store.change_password(user.id, hostile, T0, None, an_event()),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidRequest):
            await attempt
    assert await store.list_users() == [user]
    assert await store.list_clients() == [client]
    assert await store.list_sessions(include_revoked=True) == sessions_before
    assert await store.list_keys() == []
    assert await store.list_events() == events_before


async def test_hostile_text_in_an_event_is_recorded_scrubbed_and_the_session_still_ends(
    seeded: Seeded,
) -> None:
    bare, _, _, session = seeded
    store = GuardedStore(bare)
    device = Device(user_agent="evil\x00agent\ud800", ip="203.0.113.9", name="n\x00")
    event = an_event(EventType.REUSE_DETECTED, session_id=session.id, device=device)
    assert await store.revoke_session(session.id, RevocationReason.REUSE_OUTSIDE_WINDOW, T0, event)
    stored = await store.get_session(session.id)
    assert stored is not None
    assert stored.revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
    (recorded,) = await store.list_events(type=EventType.REUSE_DETECTED.value)
    assert recorded.event.device == Device(
        user_agent="evil\ufffdagent\ufffd", ip="203.0.113.9", name="n\ufffd"
    )
    assert recorded.event.session_id == session.id


# PostgreSQL specifics: SKIP LOCKED, HOT, time zones, constraints


async def test_purge_skips_sessions_locked_by_a_rotation_instead_of_waiting(
    seeded: Seeded, postgres_url: str, pg_schema: str
) -> None:
    store, user, client, _ = seeded
    long_ago = T0 - timedelta(days=60)
    expired = [a_session(user, client, created=long_ago) for _ in range(3)]
    for s in expired:
        await store.create_session(s, an_event())
    now = T0 + timedelta(minutes=1)
    async with admin(postgres_url, pg_schema) as blocker:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", expired[0].id)
        took, error = await elapsed(store.purge_expired(now, 86400, 10))
        assert error is None
        assert took < TIMEOUT / 2  # never waited on the lock
        assert await store.get_session(expired[0].id) is not None
        assert await store.get_session(expired[1].id) is None
        await holding.rollback()
    assert await store.purge_expired(now, 86400, 10) == 1
    assert await store.purge_expired(now, 86400, 10) == 0


async def test_a_rotation_is_a_hot_update(
    postgres_url: str, pg_schema: str, store: PostgresStore
) -> None:
    _, _, session = await seed(store)
    rotations = 10
    for generation in range(rotations):
        at = T0 + timedelta(seconds=generation + 1)
        assert await store.advance_generation(session.id, generation, at, at + timedelta(hours=1))
    await store.close()  # a backend flushes its statistics when it exits
    async with admin(postgres_url) as conn:
        for _ in range(100):
            row = await conn.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE schemaname = $1 AND relname = 'sessions'",
                pg_schema,
            )
            if row is not None and row["n_tup_upd"] >= rotations:
                break
            await asyncio.sleep(0.1)
    assert row is not None
    assert row["n_tup_upd"] == rotations
    # No index covers a column a rotation sets: the index pages are never touched.
    assert row["n_tup_hot_upd"] == rotations


async def test_times_come_back_as_the_same_instants_in_utc(seeded: Seeded) -> None:
    store, user, client, _ = seeded
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=plus_two)
    session = a_session(user, client, created=created)
    await store.create_session(session, an_event(at=created))
    stored = await store.get_session(session.id)
    assert stored == session
    assert stored is not None
    assert stored.created_at.tzinfo is UTC
    assert stored.absolute_expires_at.tzinfo is UTC
    assert stored.salt == session.salt
    events = await store.list_events(since=created)
    assert [e.event.at for e in events] == [created]
    assert events[0].event.at.tzinfo is UTC


async def test_a_session_of_an_unknown_user_is_not_found(seeded: Seeded) -> None:
    store, _, client, _ = seeded
    with pytest.raises(NotFound):
        await store.create_session(a_session(a_user("ghost"), client), an_event())


async def test_a_duplicate_session_id_already_exists_and_records_nothing(seeded: Seeded) -> None:
    store, _, _, session = seeded
    before = await store.list_events()
    with pytest.raises(AlreadyExists):
        await store.create_session(session, an_event())
    assert await store.list_events() == before


# The error mapping and when work runs again


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.LockNotAvailableError("canceling statement due to lock timeout"),
        asyncpg.TooManyConnectionsError("too many clients"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("pool is closed"),
        asyncpg.InternalClientError("cannot switch to state 12"),
        asyncpg.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
        asyncpg.DiskFullError("could not extend file"),
        asyncpg.UndefinedTableError('relation "sessions" does not exist'),
        ConnectionResetError(104, "Connection reset by peer"),
        OSError(113, "No route to host"),
        TimeoutError(),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_every_transient_failure_is_store_unavailable(
    store: PostgresStore, error: Exception
) -> None:
    async def failing(conn: object) -> None:
        raise error

    with pytest.raises(StoreUnavailable):
        await store._run(failing)


@pytest.mark.parametrize(
    ("error", "read", "runs", "outcome"),
    [
        # Lost with the statement in flight: a read runs again on a fresh connection...
        (asyncpg.ConnectionDoesNotExistError("closed mid-operation"), True, 2, "ok"),
        (asyncpg.AdminShutdownError("terminating connection"), True, 2, "ok"),
        # ...a write may have committed: never repeated.
        (asyncpg.ConnectionDoesNotExistError("closed mid-operation"), False, 1, "unavailable"),
        (asyncpg.AdminShutdownError("terminating connection"), False, 1, "unavailable"),
        # Refused before a byte was sent: nothing ran, so even a write runs again.
        (asyncpg.InternalClientError("cannot switch to state 12"), False, 2, "ok"),
        (asyncpg.InterfaceError("connection is closed"), False, 2, "ok"),
        # A server-side refusal is an answer, not a lost connection.
        (asyncpg.LockNotAvailableError("lock timeout"), True, 1, "unavailable"),
    ],
)
async def test_only_work_that_cannot_have_committed_runs_again(
    store: PostgresStore, error: Exception, read: bool, runs: int, outcome: str
) -> None:
    calls = 0

    async def flaky(conn: object) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error
        return "ok"

    try:
        result = await store._run(flaky, read=read)
    except StoreUnavailable:
        result = "unavailable"
    assert (calls, result) == (runs, outcome)


async def test_a_read_that_fails_twice_is_unavailable(store: PostgresStore) -> None:
    calls = 0

    async def dead(conn: object) -> None:
        nonlocal calls
        calls += 1
        raise asyncpg.ConnectionDoesNotExistError("closed mid-operation")

    with pytest.raises(StoreUnavailable):
        await store._run(dead, read=True)
    assert calls == 2


async def test_a_database_without_the_schema_is_unavailable_not_a_crash(
    postgres_url: str,
) -> None:
    opened = await open_postgres(
        postgres_url, timeout=TIMEOUT, pool_size=1, schema=f"t_never_{secrets.token_hex(4)}"
    )
    try:
        await opened.ping()  # the server answers; the tables are not there
        with pytest.raises(StoreUnavailable, match="does not exist"):
            await opened.get_user(UserId("00000000-0000-4000-8000-000000000000"))
    finally:
        await opened.close()


async def test_a_closed_store_is_unavailable_and_does_not_reopen(
    postgres_url: str, pg_schema: str
) -> None:
    opened = await open_postgres(postgres_url, timeout=TIMEOUT, pool_size=1, schema=pg_schema)
    await opened.ping()
    await opened.close()
    with pytest.raises(StoreUnavailable):
        await opened.ping()
    with pytest.raises(StoreUnavailable):
        await opened.record(an_event())
    await opened.close()  # closing twice is harmless
