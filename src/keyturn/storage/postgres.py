"""The PostgreSQL store: many stateless keyturn processes on one database.

asyncpg with a small pool per process; statements are prepared and cached per
connection, so a rotation is one round trip: a compare-and-swap `UPDATE ... WHERE
generation = p` in autocommit. No row lock is ever held across the network. A
revocation and its audit row are one statement (a data-modifying CTE), committed even
though the request that decided it will fail.

Connections, their timeouts and their recovery: `storage.postgres_pool`.

PostgreSQL `text` cannot hold NUL, and UTF-8 cannot hold a lone surrogate: no store
is handed such text, `service.guarded_store` answers for it first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from keyturn.core.audit import SecurityEvent
from keyturn.core.errors import AlreadyExists, NotFound
from keyturn.core.ids import ClientId, KeyId, SessionId, UserId
from keyturn.core.models import (
    Attempted,
    AuthorizationCode,
    Client,
    EndedSession,
    NotRotated,
    Presentation,
    RevocationReason,
    Rotated,
    RotationAttempt,
    Session,
    StoredKey,
    User,
)
from keyturn.core.policy import ReplayLog, RotationSettings
from keyturn.storage import rows, sql
from keyturn.storage.batching import TurnBatcher
from keyturn.storage.postgres_pool import Conn, PostgresPool, from_db, to_db
from keyturn.storage.postgres_sql import (
    ADD_CLIENT,
    ADD_CODE,
    ADD_USER,
    BURN_CODE,
    CREATE_SESSION,
    PURGE,
    RECORD_REPLAY,
    REDEEM_WITH_SESSION,
    REVOKE_SESSION,
    REVOKE_USER_SESSIONS,
)
from keyturn.storage.sql_reads import SqlReads

# The rotation in one round trip (`attempt_rotation`), for every attempt made in one
# turn of the event loop at once (`storage.batching`): each attempt's presentation as
# this statement's snapshot saw it, and the compare-and-swap guarded by exactly the
# state on which the rules rotate (`keyturn.core.rotation.attempt_holds`, to which a
# property test holds this SQL). Under READ COMMITTED the UPDATE re-checks its guard on
# the row version it locks: a rotation or revocation committed since the snapshot
# makes it match nothing, and the caller, finding nothing written, decides on the
# presentation and goes the two-step way. Attempts on one session in one batch are
# concurrent presentations: the UPDATE moves the row once, for one of them (PostgreSQL
# updates a row at most once per statement), and the others find nothing written, as
# the losers of a race do. The session as committed comes back prefixed `m_`; when the
# UPDATE wrote, the columns read before it come back NULL (nothing to encode or decode
# for nothing). One row per attempt, in order ($1..$8 are arrays, one element each).
_MOVED_AS = ", ".join(f"s.{c} AS m_{c}" for c in rows.SESSION_COLUMNS)
_PRE_COLUMNS = (
    *(f"c_{c}" for c in rows.CLIENT_COLUMNS),
    *rows.SESSION_COLUMNS,
    *(f"u_{c}" for c in rows.USER_COLUMNS),
)
_PRE_UNLESS_MOVED = ", ".join(
    f"CASE WHEN moved.m_id IS NULL THEN pre.{c} END AS {c}" for c in _PRE_COLUMNS
)
_ATTEMPTS = f"""
WITH attempt AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::int8[], $4::bytea[], $5::timestamptz[],
        $6::timestamptz[], $7::text[], $8::text[]
    ) WITH ORDINALITY AS a(client_id, session_id, generation, salt, at, idle_until,
                           secret_hash, ip, n)
),
pre AS (
    SELECT a.n, {rows.CLIENT_AS}, s.*, {rows.USER_AS}
    FROM attempt a
    JOIN clients c ON c.id = a.client_id
    LEFT JOIN sessions s ON s.id = a.session_id
    LEFT JOIN users u ON u.id = s.user_id
),
moved AS (
    UPDATE sessions s
    SET generation = a.generation + 1, rotated_at = a.at, last_used_at = a.at,
        idle_expires_at = LEAST(a.idle_until, s.absolute_expires_at), rotated_ip = a.ip
    FROM attempt a, users u, clients c
    WHERE s.id = a.session_id AND s.generation = a.generation AND s.salt = a.salt
      AND s.client_id IS NOT DISTINCT FROM a.client_id AND s.dpop_jkt IS NULL
      AND s.revoked_at IS NULL AND a.at < s.absolute_expires_at AND a.at < s.idle_expires_at
      AND u.id = s.user_id AND u.enabled
      AND u.password_changed_at <= COALESCE(s.authenticated_at, s.created_at)
      AND c.id = a.client_id AND c.enabled AND c.secret_hash IS NOT DISTINCT FROM a.secret_hash
    RETURNING a.n AS m_n, {_MOVED_AS}
)
SELECT {_PRE_UNLESS_MOVED}, moved.*, clock_timestamp() AS db_now
FROM attempt
LEFT JOIN pre ON pre.n = attempt.n
LEFT JOIN moved ON moved.m_n = attempt.n
ORDER BY attempt.n
"""  # noqa: S608 - fixed names
_MAX_BATCH = 64


def _ended(found: Sequence[asyncpg.Record]) -> list[EndedSession]:
    return [EndedSession(SessionId(r["id"]), ClientId(r["client_id"])) for r in found]


def _event_values(event: SecurityEvent) -> tuple[Any, ...]:
    return rows.event_values(event, to_db)


class PostgresStore(PostgresPool, SqlReads):
    """The `Store` port on PostgreSQL. Build it with `open_postgres`.

    Each operation is one statement in autocommit, or one short transaction; it commits
    everything it writes or nothing. Failures to reach the database in time are
    `StoreUnavailable`; a read whose connection died under it is tried once more on a
    fresh connection, a write only if asyncpg refused it before sending anything.
    """

    def __init__(self, dsn: str, *, timeout: float, pool_size: int, schema: str | None) -> None:
        PostgresPool.__init__(self, dsn, timeout=timeout, pool_size=pool_size, schema=schema)
        SqlReads.__init__(self, to_db, from_db)
        self._attempts: TurnBatcher[RotationAttempt, asyncpg.Record] = TurnBatcher(
            self._attempt_all, _MAX_BATCH
        )

    async def _ended(self, sql: str, *args: Any) -> list[EndedSession]:
        async def fetch(conn: Conn) -> list[EndedSession]:
            return _ended(await conn.fetch(sql, *args))

        return await self._run(fetch)

    @staticmethod
    async def _revoke_live(
        conn: Conn, where: str, keys: Sequence[Any], reason: RevocationReason, at: datetime
    ) -> list[EndedSession]:
        return _ended(
            await conn.fetch(sql.REVOKE_LIVE.format(where=where), at, reason.value, *keys)
        )

    # Users

    async def add_user(self, user: User, event: SecurityEvent) -> None:
        values = rows.user_values(user, to_db)
        try:
            await self._run(lambda conn: conn.execute(ADD_USER, *_event_values(event), *values))
        except AlreadyExists:
            raise AlreadyExists(f"A user named {user.username!r} exists.") from None

    async def disable_user(
        self, user_id: UserId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:

        async def work(conn: Conn) -> list[EndedSession]:
            status = await conn.execute(sql.DISABLE_USER, user_id)
            if status != "UPDATE 1":
                raise NotFound("No such user.")
            ended = await self._revoke_live(
                conn, "user_id = $3", (user_id,), RevocationReason.USER_DISABLED, at
            )
            await conn.execute(sql.INSERT_EVENT, *_event_values(event))
            return ended

        return await self._tx(work)

    async def change_password(
        self,
        user_id: UserId,
        password_hash: str,
        at: datetime,
        keep: SessionId | None,
        event: SecurityEvent,
    ) -> list[EndedSession]:

        async def work(conn: Conn) -> list[EndedSession]:
            status = await conn.execute(
                sql.SET_PASSWORD,
                password_hash,
                at,
                user_id,
            )
            if status != "UPDATE 1":
                raise NotFound("No such user.")
            if keep is not None:
                await conn.execute(
                    sql.AUTHENTICATED,
                    at,
                    keep,
                    user_id,
                )
            ended = await self._revoke_live(
                conn,
                "user_id = $3 AND id IS DISTINCT FROM $4",
                (user_id, keep),
                RevocationReason.PASSWORD_CHANGED,
                at,
            )
            await conn.execute(sql.INSERT_EVENT, *_event_values(event))
            return ended

        return await self._tx(work)

    # Clients

    async def add_client(self, client: Client, event: SecurityEvent) -> None:
        values = rows.client_values(client, to_db)
        try:
            await self._run(lambda conn: conn.execute(ADD_CLIENT, *_event_values(event), *values))
        except AlreadyExists:
            raise AlreadyExists(f"A client {client.id!r} exists.") from None

    async def set_client_rotation(
        self, client_id: ClientId, rotation: RotationSettings, event: SecurityEvent
    ) -> None:

        async def work(conn: Conn) -> None:
            status = await conn.execute(
                sql.SET_ROTATION,
                client_id,
                rows.rotation_json(rotation),
            )
            if status != "UPDATE 1":
                raise NotFound("No such client.")
            await conn.execute(sql.INSERT_EVENT, *_event_values(event))

        await self._tx(work)

    async def disable_client(
        self, client_id: ClientId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:

        async def work(conn: Conn) -> list[EndedSession]:
            status = await conn.execute(sql.DISABLE_CLIENT, client_id)
            if status != "UPDATE 1":
                raise NotFound("No such client.")
            ended = await self._revoke_live(
                conn, "client_id = $3", (client_id,), RevocationReason.CLIENT_DISABLED, at
            )
            await conn.execute(sql.INSERT_EVENT, *_event_values(event))
            return ended

        return await self._tx(work)

    # Sessions

    async def create_session(self, session: Session, event: SecurityEvent) -> None:
        values = rows.session_values(session, to_db)
        await self._run(lambda conn: conn.execute(CREATE_SESSION, *_event_values(event), *values))

    async def attempt_rotation(self, attempt: RotationAttempt) -> Attempted:
        row = await self._attempts.submit(attempt)
        if row["m_id"] is None:
            if row["c_id"] is None:  # an unknown client: nothing else was read
                return NotRotated(Presentation(client=None))
            return NotRotated(rows.presentation_from(row, from_db))
        return Rotated(rows.session_from(row, from_db, "m_"))  # only what was written is parsed

    async def _attempt_all(self, attempts: Sequence[RotationAttempt]) -> list[asyncpg.Record]:
        """One statement for the attempts of one turn; one row each, in order."""
        args = (
            [a.client_id for a in attempts],
            [a.session_id for a in attempts],
            [a.generation for a in attempts],
            [a.salt for a in attempts],
            [a.at for a in attempts],
            [a.at + timedelta(seconds=a.idle_ttl) for a in attempts],
            [a.client_secret_hash for a in attempts],
            [a.ip for a in attempts],
        )
        # A write: never repeated (a second try could misreport a rotation it won).
        found: list[asyncpg.Record] = await self._run(lambda conn: conn.fetch(_ATTEMPTS, *args))
        if found:
            # The hot path's one extra column keeps this host on the database's clock.
            self._sample(found[0]["db_now"])
        return found

    async def advance_generation(
        self,
        session_id: SessionId,
        from_generation: int,
        at: datetime,
        idle_expires_at: datetime,
        ip: str | None = None,
    ) -> bool:
        status = await self._run(
            lambda conn: conn.execute(
                sql.ADVANCE, session_id, from_generation, at, idle_expires_at, ip
            )
        )
        return status == "UPDATE 1"

    async def record_replay(
        self, session_id: SessionId, read: ReplayLog, log: ReplayLog, event: SecurityEvent
    ) -> bool:
        count = await self._run(
            lambda conn: conn.fetchval(
                RECORD_REPLAY,
                *_event_values(event),
                session_id,
                read.newest,
                read.bits,
                log.newest,
                log.bits,
            )
        )
        return bool(count)

    async def keep_session(
        self, session_id: SessionId, generation: int, at: datetime, idle_expires_at: datetime
    ) -> bool:
        status = await self._run(
            lambda conn: conn.execute(sql.KEEP, session_id, generation, at, idle_expires_at)
        )
        return status == "UPDATE 1"

    async def revoke_session(
        self,
        session_id: SessionId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
    ) -> list[EndedSession]:
        return await self._ended(
            REVOKE_SESSION, *_event_values(event), at, reason.value, session_id
        )

    async def revoke_user_sessions(
        self,
        user_id: UserId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
        keep: SessionId | None = None,
    ) -> list[EndedSession]:
        return await self._ended(
            REVOKE_USER_SESSIONS, *_event_values(event), at, reason.value, user_id, keep
        )

    async def list_sessions(
        self, user_id: UserId | None = None, *, include_revoked: bool = False
    ) -> list[Session]:
        if user_id is None:
            found = await self._scanning(sql.ALL_SESSIONS, include_revoked)
        else:
            found = await self._all(sql.SESSIONS_OF_USER, user_id, include_revoked)
        return [rows.session_from(r, from_db) for r in found]

    async def list_revoked(self, after: datetime, after_id: str, limit: int) -> list[Session]:
        found = await self._all(
            "SELECT * FROM sessions WHERE revoked_at IS NOT NULL "
            "AND (revoked_at, id) > ($1, $2) ORDER BY revoked_at, id LIMIT $3",
            to_db(after),
            after_id,
            limit,
        )
        return [rows.session_from(r, from_db) for r in found]

    async def purge_expired(
        self,
        now: datetime,
        retention_seconds: int,
        batch_size: int,
        *,
        code_retention_seconds: int | None = None,
        audit_retention_seconds: int | None = None,
    ) -> int:
        cutoff = now - timedelta(seconds=retention_seconds)
        codes_kept = retention_seconds if code_retention_seconds is None else code_retention_seconds
        code_cutoff = now - timedelta(seconds=codes_kept)
        audit_cutoff = (
            None
            if audit_retention_seconds is None
            else now - timedelta(seconds=audit_retention_seconds)
        )
        found = await self._scanning(PURGE, cutoff, batch_size, code_cutoff, audit_cutoff)
        return int(found[0][0])

    # Authorization codes

    async def add_authorization_code(self, code: AuthorizationCode, event: SecurityEvent) -> None:
        values = rows.code_values(code, to_db)
        await self._run(lambda conn: conn.execute(ADD_CODE, *_event_values(event), *values))

    async def redeem_authorization_code(
        self, code_hash: str, at: datetime, session: Session | None, event: SecurityEvent
    ) -> bool:
        head = (*_event_values(event), to_db(at), session.id if session else None, code_hash)
        if session is None:
            taken = await self._run(lambda conn: conn.fetchval(BURN_CODE, *head))
        else:
            values = rows.session_values(session, to_db)
            taken = await self._run(lambda conn: conn.fetchval(REDEEM_WITH_SESSION, *head, *values))
        return bool(taken)

    # Keys

    async def save_keys(self, keys: Sequence[StoredKey], events: Sequence[SecurityEvent]) -> None:
        key_rows = [rows.key_values(key, to_db) for key in keys]
        event_rows = [_event_values(event) for event in events]

        async def work(conn: Conn) -> None:
            if key_rows:
                await conn.executemany(sql.UPSERT_KEY, key_rows)
            if event_rows:
                await conn.executemany(sql.INSERT_EVENT, event_rows)

        await self._tx(work)

    async def delete_keys(self, kids: Sequence[KeyId]) -> None:
        wanted = list(kids)
        if wanted:
            await self._run(
                lambda conn: conn.execute(
                    "DELETE FROM signing_keys WHERE kid = ANY($1::text[])", wanted
                )
            )

    # Audit

    async def record(self, event: SecurityEvent) -> None:
        values = _event_values(event)
        await self._run(lambda conn: conn.execute(sql.INSERT_EVENT, *values))

    # Life cycle

    async def ping(self) -> None:
        # The readiness probe keeps an otherwise idle host on the database's clock.
        row = await self._one("SELECT clock_timestamp() AS db_now")
        if row is not None:
            self._sample(row["db_now"])


async def open_postgres(
    dsn: str, *, timeout: float, pool_size: int, schema: str | None = None
) -> PostgresStore:
    """Open the PostgreSQL store at `dsn` (`postgresql://` or `postgres://`), its tables
    in `schema` if given (else the server's search path), with at most `pool_size`
    connections and every wait bounded by `timeout` seconds (see the module's table).

    Connecting happens at the first operation, so a process starts while the database
    is down: that operation raises `StoreUnavailable` within about `timeout`, and a later
    one succeeds once the database is back. `ValueError` for a malformed argument."""
    return PostgresStore(dsn, timeout=timeout, pool_size=pool_size, schema=schema)
