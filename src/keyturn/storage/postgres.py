"""The PostgreSQL store: many stateless keyturn processes on one database.

asyncpg with a small pool per process; statements are prepared and cached per
connection, so a rotation is one round trip: a compare-and-swap `UPDATE ... WHERE
generation = p` in autocommit. No row lock is ever held across the network. A
revocation and its audit row are one statement (a data-modifying CTE), committed even
though the request that decided it will fail.

Every failure to get an answer in time (connection refused or lost, statement or lock
timeout, serialization failure, pool exhausted) is `StoreUnavailable`: the caller
answers 503 and issues nothing. The pool replaces broken connections by itself, so the
first request after the database returns succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg

from keyturn.core.audit import RecordedEvent, SecurityEvent
from keyturn.core.errors import AlreadyExists, InvalidRequest, NotFound, StoreUnavailable
from keyturn.core.ids import ClientId, KeyId, SessionId, UserId
from keyturn.core.models import Client, RevocationReason, Session, StoredKey, User
from keyturn.storage import rows

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

T = TypeVar("T")
Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


def to_db(value: datetime) -> datetime:
    return value


def from_db(value: Any) -> datetime:
    moment: datetime = value
    # asyncpg hands timestamptz back in UTC already; convert only what is not.
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _placeholders(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_placeholders(len(columns))})"  # noqa: S608 - fixed names


_INSERT_USER = _insert("users", rows.USER_COLUMNS)
_INSERT_CLIENT = _insert("clients", rows.CLIENT_COLUMNS)
_INSERT_SESSION = _insert("sessions", rows.SESSION_COLUMNS)
_INSERT_EVENT = _insert("audit_events", rows.EVENT_COLUMNS)
_UPSERT_KEY = (
    _insert("signing_keys", rows.KEY_COLUMNS)
    + " ON CONFLICT (kid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in rows.KEY_COLUMNS if c != "kid")
)
_EVENT_ARGS = len(rows.EVENT_COLUMNS)

# Revoke and record in one statement: both commit, or neither.
_REVOKE_ONE = f"""
WITH ended AS (
    UPDATE sessions SET revoked_at = ${_EVENT_ARGS + 2}, revoked_reason = ${_EVENT_ARGS + 3}
    WHERE id = ${_EVENT_ARGS + 1} AND revoked_at IS NULL
    RETURNING id
), recorded AS (
    INSERT INTO audit_events ({", ".join(rows.EVENT_COLUMNS)})
    VALUES ({_placeholders(_EVENT_ARGS)})
)
SELECT count(*) FROM ended
"""  # noqa: S608 - fixed names

_SESSION_WITH_USER = rows.SESSION_WITH_USER.format(param="$1")

_ADVANCE = """
UPDATE sessions
SET generation = $2 + 1, rotated_at = $3, last_used_at = $3, idle_expires_at = $4
WHERE id = $1 AND generation = $2 AND revoked_at IS NULL
"""

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.QueryCanceledError,
    asyncpg.LockNotAvailableError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.InsufficientResourcesError,
)


class PostgresStore:
    def __init__(self, dsn: str, *, timeout: float, pool_size: int, schema: str | None) -> None:
        self._dsn = dsn.replace("postgres://", "postgresql://", 1)
        self._timeout = timeout
        self._pool_size = pool_size
        self._schema = schema
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                millis = str(int(self._timeout * 1000))
                settings = {
                    "application_name": "keyturn",
                    "statement_timeout": millis,
                    "lock_timeout": millis,
                    "idle_in_transaction_session_timeout": str(int(self._timeout * 4000)),
                }
                if self._schema:
                    settings["search_path"] = self._schema
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._pool_size,
                    timeout=self._timeout,
                    command_timeout=self._timeout * 2,
                    server_settings=settings,
                )
            return self._pool

    async def _run(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            pool = self._pool
            if pool is None:
                pool = await asyncio.wait_for(self._get_pool(), self._timeout * 2)
            async with pool.acquire(timeout=self._timeout) as conn:
                return await work(conn)
        except asyncpg.UniqueViolationError as error:
            raise AlreadyExists(detail=str(error)) from None
        except (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError):
            raise InvalidRequest("The request holds a character that cannot be stored.") from None
        except _UNAVAILABLE as error:
            raise StoreUnavailable(detail=f"postgres: {type(error).__name__}: {error}") from None

    async def _tx(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        async def in_transaction(conn: Conn) -> T:
            async with conn.transaction():
                return await work(conn)

        return await self._run(in_transaction)

    async def _one(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async def fetch(conn: Conn) -> asyncpg.Record | None:
            return await conn.fetchrow(sql, *args)

        return await self._run(fetch)

    async def _all(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def fetch(conn: Conn) -> list[asyncpg.Record]:
            return list(await conn.fetch(sql, *args))

        return await self._run(fetch)

    @staticmethod
    async def _event(conn: Conn, event: SecurityEvent) -> None:
        await conn.execute(_INSERT_EVENT, *rows.event_values(event, to_db))

    @staticmethod
    async def _revoke(
        conn: Conn,
        where: str,
        args: Sequence[Any],
        reason: RevocationReason,
        at: datetime,
    ) -> list[SessionId]:
        sql = f"UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE revoked_at IS NULL AND {where} RETURNING id"  # noqa: E501, S608 - `where` is one of this module's fixed clauses
        found = await conn.fetch(
            sql,
            at,
            reason.value,
            *args,
        )
        return [SessionId(r["id"]) for r in found]

    # Users

    async def add_user(self, user: User, event: SecurityEvent) -> None:
        if not rows.storable(user.username):
            raise InvalidRequest("The username holds a forbidden character.")

        async def work(conn: Conn) -> None:
            await conn.execute(_INSERT_USER, *rows.user_values(user, to_db))
            await self._event(conn, event)

        try:
            await self._tx(work)
        except AlreadyExists:
            raise AlreadyExists(f"A user named {user.username!r} exists.") from None

    async def get_user(self, user_id: UserId) -> User | None:
        if not rows.storable(user_id):
            return None
        row = await self._one("SELECT * FROM users WHERE id = $1", user_id)
        return rows.user_from(row, from_db) if row else None

    async def find_user(self, username: str) -> User | None:
        if not rows.storable(username):
            return None
        row = await self._one("SELECT * FROM users WHERE username = $1", username)
        return rows.user_from(row, from_db) if row else None

    async def list_users(self) -> list[User]:
        found = await self._all("SELECT * FROM users ORDER BY username")
        return [rows.user_from(r, from_db) for r in found]

    async def disable_user(
        self, user_id: UserId, at: datetime, event: SecurityEvent
    ) -> list[SessionId]:
        async def work(conn: Conn) -> list[SessionId]:
            status = await conn.execute("UPDATE users SET enabled = false WHERE id = $1", user_id)
            if status != "UPDATE 1":
                raise NotFound("No such user.")
            ended = await self._revoke(
                conn, "user_id = $3", (user_id,), RevocationReason.USER_DISABLED, at
            )
            await self._event(conn, event)
            return ended

        return await self._tx(work)

    async def change_password(
        self,
        user_id: UserId,
        password_hash: str,
        at: datetime,
        keep: SessionId | None,
        event: SecurityEvent,
    ) -> list[SessionId]:
        async def work(conn: Conn) -> list[SessionId]:
            status = await conn.execute(
                "UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3",
                password_hash,
                at,
                user_id,
            )
            if status != "UPDATE 1":
                raise NotFound("No such user.")
            await conn.execute(
                "UPDATE sessions SET authenticated_at = $1 WHERE id = $2 AND user_id = $3",
                at,
                keep,
                user_id,
            )
            ended = await self._revoke(
                conn,
                "user_id = $3 AND id IS DISTINCT FROM $4",
                (user_id, keep),
                RevocationReason.PASSWORD_CHANGED,
                at,
            )
            await self._event(conn, event)
            return ended

        return await self._tx(work)

    # Clients

    async def add_client(self, client: Client, event: SecurityEvent) -> None:
        if not rows.storable(client.id, *client.redirect_uris, *client.audience):
            raise InvalidRequest("The client holds a forbidden character.")

        async def work(conn: Conn) -> None:
            await conn.execute(_INSERT_CLIENT, *rows.client_values(client, to_db))
            await self._event(conn, event)

        try:
            await self._tx(work)
        except AlreadyExists:
            raise AlreadyExists(f"A client {client.id!r} exists.") from None

    async def get_client(self, client_id: ClientId) -> Client | None:
        if not rows.storable(client_id):
            return None
        row = await self._one("SELECT * FROM clients WHERE id = $1", client_id)
        return rows.client_from(row, from_db) if row else None

    async def list_clients(self) -> list[Client]:
        found = await self._all("SELECT * FROM clients ORDER BY id")
        return [rows.client_from(r, from_db) for r in found]

    async def disable_client(
        self, client_id: ClientId, at: datetime, event: SecurityEvent
    ) -> list[SessionId]:
        if not rows.storable(client_id):
            raise NotFound("No such client.")

        async def work(conn: Conn) -> list[SessionId]:
            status = await conn.execute(
                "UPDATE clients SET enabled = false WHERE id = $1", client_id
            )
            if status != "UPDATE 1":
                raise NotFound("No such client.")
            ended = await self._revoke(
                conn, "client_id = $3", (client_id,), RevocationReason.CLIENT_DISABLED, at
            )
            await self._event(conn, event)
            return ended

        return await self._tx(work)

    # Sessions

    async def create_session(self, session: Session, event: SecurityEvent) -> None:
        if not rows.storable(session.device.user_agent, session.device.ip, session.device.name):
            raise InvalidRequest("The device description holds a forbidden character.")

        async def work(conn: Conn) -> None:
            await conn.execute(_INSERT_SESSION, *rows.session_values(session, to_db))
            await self._event(conn, event)

        await self._tx(work)

    async def get_session(self, session_id: SessionId) -> Session | None:
        if not rows.storable(session_id):
            return None
        row = await self._one("SELECT * FROM sessions WHERE id = $1", session_id)
        return rows.session_from(row, from_db) if row else None

    async def get_session_with_user(self, session_id: SessionId) -> tuple[Session, User] | None:
        if not rows.storable(session_id):
            return None
        row = await self._one(_SESSION_WITH_USER, session_id)
        if row is None:
            return None
        return rows.session_from(row, from_db), rows.user_from(row, from_db, "u_")

    async def advance_generation(
        self,
        session_id: SessionId,
        from_generation: int,
        at: datetime,
        idle_expires_at: datetime,
    ) -> bool:
        async def work(conn: Conn) -> bool:
            status = await conn.execute(_ADVANCE, session_id, from_generation, at, idle_expires_at)
            return bool(status == "UPDATE 1")

        return await self._run(work)

    async def revoke_session(
        self,
        session_id: SessionId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
    ) -> bool:
        if not rows.storable(session_id):
            await self.record(event)
            return False

        async def work(conn: Conn) -> bool:
            count = await conn.fetchval(
                _REVOKE_ONE, *rows.event_values(event, to_db), session_id, at, reason.value
            )
            return bool(count)

        return await self._run(work)

    async def revoke_user_sessions(
        self,
        user_id: UserId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
        keep: SessionId | None = None,
    ) -> list[SessionId]:
        async def work(conn: Conn) -> list[SessionId]:
            ended = await self._revoke(
                conn, "user_id = $3 AND id IS DISTINCT FROM $4", (user_id, keep), reason, at
            )
            await self._event(conn, event)
            return ended

        return await self._tx(work)

    async def list_sessions(
        self, user_id: UserId | None = None, *, include_revoked: bool = False
    ) -> list[Session]:
        found = await self._all(
            "SELECT * FROM sessions WHERE ($1::text IS NULL OR user_id = $1) "
            "AND ($2 OR revoked_at IS NULL) ORDER BY created_at DESC, id DESC",
            user_id,
            include_revoked,
        )
        return [rows.session_from(r, from_db) for r in found]

    async def purge_expired(self, now: datetime, retention_seconds: int, batch_size: int) -> int:
        cutoff = now - timedelta(seconds=retention_seconds)

        async def work(conn: Conn) -> int:
            # SKIP LOCKED: a row being rotated right now is left for the next batch, so
            # the purge never waits on, or deadlocks with, the hot path.
            status = await conn.execute(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions "
                "WHERE revoked_at < $1 OR idle_expires_at < $1 OR absolute_expires_at < $1 "
                "LIMIT $2 FOR UPDATE SKIP LOCKED)",
                cutoff,
                batch_size,
            )
            return int(status.split()[-1])

        return await self._run(work)

    # Keys

    async def list_keys(self) -> list[StoredKey]:
        found = await self._all("SELECT * FROM signing_keys ORDER BY created_at, kid")
        return [rows.key_from(r, from_db) for r in found]

    async def save_keys(self, keys: Sequence[StoredKey], events: Sequence[SecurityEvent]) -> None:
        async def work(conn: Conn) -> None:
            for key in keys:
                await conn.execute(_UPSERT_KEY, *rows.key_values(key, to_db))
            for event in events:
                await self._event(conn, event)

        await self._tx(work)

    async def delete_keys(self, kids: Sequence[KeyId]) -> None:
        async def work(conn: Conn) -> None:
            await conn.execute("DELETE FROM signing_keys WHERE kid = ANY($1::text[])", list(kids))

        await self._run(work)

    # Audit

    async def record(self, event: SecurityEvent) -> None:
        async def work(conn: Conn) -> None:
            await self._event(conn, event)

        await self._run(work)

    async def list_events(
        self,
        *,
        type: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[RecordedEvent]:
        found = await self._all(
            "SELECT * FROM audit_events WHERE ($1::text IS NULL OR type = $1) "
            "AND ($2::timestamptz IS NULL OR at >= $2) ORDER BY id LIMIT $3",
            type,
            since,
            limit,
        )
        return [rows.event_from(r, from_db) for r in found]

    # Life cycle

    async def ping(self) -> None:
        await self._one("SELECT 1")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except TimeoutError:
                pool.terminate()


async def open_postgres(
    dsn: str, *, timeout: float, pool_size: int, schema: str | None = None
) -> PostgresStore:
    """Open the PostgreSQL store. Connecting happens at the first operation, so a
    process starts while the database is down and recovers by itself when it returns."""
    return PostgresStore(dsn, timeout=timeout, pool_size=pool_size, schema=schema)
