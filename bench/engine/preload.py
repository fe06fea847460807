"""A benchmark database: migrated, seeded, and preloaded with live sessions in bulk.

Sessions and users are inserted with bulk SQL, not through the engine (a million
Argon2 logins would take hours). Every value is derived from the row's index, so the
benchmark can build the refresh token of any session without reading it back:

- session `i` has id `md5('s' || i)` as a UUID (random-looking, so the primary-key
  index is built in random order, as `uuid4` ids are in production) and salt
  `int8send(i)`, the index as 8 big-endian bytes;
- it belongs to user `i % users`, whose id is `md5('u' || j)`; there are four
  sessions per user, so the rotation's join reads a large users table too.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.load.logins import CLIENT, PASSWORD, SCOPE, add_client
from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import Session
from keyturn.service.engine import Engine
from keyturn.settings import Settings
from keyturn.wiring import migrate, open_engine

PG = "postgresql://root@127.0.0.1:5432/test"
SECRET = "bench-master-secret-HAS7_NkshlVqGwN0Rz-wI6n3sryx1JSN"
SESSIONS_PER_USER = 4
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Target:
    """One prepared database: where it is and what it holds."""

    store: str
    url: str
    schema: str | None
    sessions: int
    mac_key_id: int
    pool_size: int
    loaded_at: datetime
    preload_seconds: float

    @property
    def users(self) -> int:
        return max(1, self.sessions // SESSIONS_PER_USER)

    def settings(self, **overrides: object) -> Settings:
        return bench_settings(self.url, self.schema, self.pool_size, **overrides)


def bench_settings(url: str, schema: str | None, pool_size: int, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "db_schema": schema,
        "secret_key": SECRET,
        "db_pool_size": pool_size,
        "grace_seconds": 10,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def _md5_uuid(text: str) -> str:
    return str(uuid.UUID(hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()))


def session_id(i: int) -> SessionId:
    return SessionId(_md5_uuid(f"s{i}"))


def user_id(j: int) -> UserId:
    return UserId(_md5_uuid(f"u{j}"))


def salt(i: int) -> bytes:
    return i.to_bytes(8, "big")


def owner(i: int, users: int) -> int:
    return i % users


def preloaded_session(target: Target, i: int) -> Session:
    """Session `i` as the bulk load wrote it (what its refresh token needs)."""
    created = target.loaded_at - DAY
    return Session(
        id=session_id(i),
        user_id=user_id(owner(i, target.users)),
        client_id=ClientId(CLIENT),
        scope=SCOPE,
        salt=salt(i),
        generation=0,
        mac_key_id=target.mac_key_id,
        created_at=created,
        last_used_at=created,
        rotated_at=None,
        idle_expires_at=target.loaded_at + 10 * DAY,
        absolute_expires_at=created + 30 * DAY,
    )


async def first_tokens(engine: Engine, target: Target, indices: list[int]) -> list[str]:
    """The live (generation 0) refresh token of each preloaded session in `indices`."""
    return [await engine.tokens.encode_refresh(preloaded_session(target, i), 0) for i in indices]


async def _seed(url: str, schema: str | None, pool_size: int) -> tuple[str, int]:
    """The client, one user made through the engine (for a real password hash), and the
    active refresh MAC key id. Returns the password hash and the key id."""
    engine = await open_engine(bench_settings(url, schema, pool_size), schema=schema)
    try:
        user = await engine.admin.add_user("bench", PASSWORD)
        await add_client(engine)
        return user.password_hash, await engine.tokens.active_mac_key_id()
    finally:
        await engine.close()


_PG_USERS = """
INSERT INTO users (id, username, password_hash, enabled, created_at, password_changed_at)
SELECT md5('u' || j)::uuid::text, 'bench-' || j, $1, true, $2, $2
FROM generate_series(0, $3 - 1) AS j
"""

_PG_SESSIONS = """
INSERT INTO sessions (id, user_id, client_id, scope, salt, generation, mac_key_id,
    created_at, authenticated_at, last_used_at, rotated_at, idle_expires_at,
    absolute_expires_at, revoked_at, revoked_reason, user_agent, ip, device_name)
SELECT md5('s' || i)::uuid::text, md5('u' || (i % $1))::uuid::text, $2, 'read write',
    int8send(i::bigint), 0, $3, $4, NULL, $4, NULL, $5, $6, NULL, NULL, $7,
    '198.51.100.' || (i % 250), NULL
FROM generate_series(1, $8) AS i
"""


async def _load_postgres(target: Target, password_hash: str, settle: bool) -> None:
    conn = await asyncpg.connect(target.url, server_settings={"search_path": target.schema or ""})
    try:
        created = target.loaded_at - DAY
        await conn.execute(_PG_USERS, password_hash, created - DAY, target.users)
        await conn.execute(
            _PG_SESSIONS,
            target.users,
            CLIENT,
            target.mac_key_id,
            created,
            target.loaded_at + 10 * DAY,
            created + 30 * DAY,
            USER_AGENT,
            target.sessions,
        )
        if settle:
            # Steady state, not a freshly loaded heap: hint bits and the visibility map
            # set, statistics current, and the load's WAL checkpointed before measuring.
            await conn.execute("VACUUM (ANALYZE) users")
            await conn.execute("VACUUM (ANALYZE) sessions")
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def _micros(moment: datetime) -> int:
    """The SQLite store's timestamp: integer microseconds since the epoch."""
    return round(moment.timestamp() * 1_000_000)


def _load_sqlite(target: Target, password_hash: str, settle: bool) -> None:
    created = target.loaded_at - DAY
    db = sqlite3.connect(target.url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = OFF")  # the load only; the store sets its own
        users = (
            (user_id(j), f"bench-{j}", password_hash, 1, _micros(created - DAY),
             _micros(created - DAY))
            for j in range(target.users)
        )  # fmt: skip
        sessions = (
            (session_id(i), user_id(owner(i, target.users)), CLIENT, "read write", salt(i), 0,
             target.mac_key_id, _micros(created), None, _micros(created), None,
             _micros(target.loaded_at + 10 * DAY), _micros(created + 30 * DAY), None, None,
             USER_AGENT, f"198.51.100.{i % 250}", None)
            for i in range(1, target.sessions + 1)
        )  # fmt: skip
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO users (id, username, password_hash, enabled, created_at, "
            "password_changed_at) VALUES (?, ?, ?, ?, ?, ?)",
            users,
        )
        db.executemany(
            "INSERT INTO sessions (id, user_id, client_id, scope, salt, generation, "
            "mac_key_id, created_at, authenticated_at, last_used_at, rotated_at, "
            "idle_expires_at, absolute_expires_at, revoked_at, revoked_reason, user_agent, "
            "ip, device_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            sessions,
        )
        db.execute("COMMIT")
        if settle:
            db.execute("ANALYZE")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def prepare(
    store: str, sessions: int, folder: Path, pool_size: int, *, settle: bool = True
) -> Target:
    """Create, migrate, seed and preload a database of `sessions` live sessions. With
    `settle`, then vacuum, analyse and checkpoint it: the state of a database that has
    run a while (the engine benchmarks). `bench/run` passes False: nothing keyturn does
    not run itself."""
    if store == "postgres":
        schema: str | None = f"bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_pg_admin(f"CREATE SCHEMA {schema}"))
        url = PG
    elif store == "sqlite":
        schema = None
        url = f"sqlite:///{folder / f'bench-{sessions}-{uuid.uuid4().hex[:6]}.db'}"
    else:
        raise ValueError(f"unknown store {store!r}")
    try:
        migrate(bench_settings(url, schema, pool_size), schema=schema)
        password_hash, mac_key_id = asyncio.run(_seed(url, schema, pool_size))
        began = time.perf_counter()
        target = Target(store, url, schema, sessions, mac_key_id, pool_size, datetime.now(UTC), 0.0)
        if store == "postgres":
            asyncio.run(_load_postgres(target, password_hash, settle))
        else:
            _load_sqlite(target, password_hash, settle)
    except BaseException:
        if schema:
            asyncio.run(_pg_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        raise
    seconds = time.perf_counter() - began
    print(f"# {store}: preloaded {sessions:,} sessions in {seconds:.1f} s", flush=True)
    return replace(target, preload_seconds=seconds)


def dispose(target: Target) -> None:
    """Drop what `prepare` made (the SQLite file goes with its temporary folder)."""
    if target.schema:
        asyncio.run(_pg_admin(f"DROP SCHEMA IF EXISTS {target.schema} CASCADE"))
