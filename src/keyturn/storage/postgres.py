"""The PostgreSQL store: many stateless keyturn processes on one database.

asyncpg with a small pool per process; statements are prepared and cached per
connection, so a rotation is one round trip: a compare-and-swap `UPDATE ... WHERE
generation = p` in autocommit. No row lock is ever held across the network. A
revocation and its audit row are one statement (a data-modifying CTE), committed even
though the request that decided it will fail.

Every timeout derives from the one `timeout` (seconds) the operator sets:

| what | bound | on expiry |
| --- | --- | --- |
| connecting (asyncpg `timeout`) | `timeout` | `TimeoutError` |
| waiting for a pooled connection | `timeout` | `TimeoutError` |
| opening the pool (first use) | 2 × `timeout` | `TimeoutError` |
| `statement_timeout` (server side) | `timeout` | `QueryCanceledError` |
| `lock_timeout` (server side) | `timeout` | `LockNotAvailableError` |
| `command_timeout` (client side) | 2 × `timeout` | `TimeoutError` |
| `idle_in_transaction_session_timeout` | 4 × `timeout` | the server ends the session |

The server's own timeouts fire first, so a slow statement or a held row lock ends with
a clean error on a connection that stays usable; the client-side timeout is the backstop
for a server or network that stops answering at all. A process frozen inside a
transaction loses its session, and its row locks, after 4 × `timeout`.

Every failure to get an answer in time is `StoreUnavailable` (`postgres_errors`): the
caller answers 503 and issues nothing. The pool is opened at first use, so a process
starts while the database is down, and it replaces broken connections at the next
acquire, so the store recovers by itself when the database returns. When one connection
is found dead, every connection opened before it is replaced; the work then runs once
more on a fresh connection if it is a read, or if asyncpg refused it before sending a
byte. A write lost in flight may have committed: it is reported, never repeated.

PostgreSQL `text` cannot hold NUL, and UTF-8 cannot hold a lone surrogate: no store
is handed such text, `service.guarded_store` answers for it first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg

from keyturn.core.audit import RecordedEvent, SecurityEvent
from keyturn.core.errors import AlreadyExists, NotFound, StoreUnavailable
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
from keyturn.storage import rows
from keyturn.storage.batching import TurnBatcher
from keyturn.storage.clocks import DatabaseClock
from keyturn.storage.postgres_errors import connection_lost, may_repeat, translate

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

T = TypeVar("T")
S = TypeVar("S", bound=str)
Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Work: TypeAlias = Callable[[Conn], Awaitable[T]]


def to_db(value: datetime) -> datetime:
    return value


def from_db(value: Any) -> datetime:
    moment: datetime = value
    # asyncpg hands timestamptz back in UTC already; convert only what is not.
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


# SQL. Table and column names are this module's constants, never input.


def _placeholders(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


def _insert(table: str, columns: Sequence[str], start: int = 1) -> str:
    names = ", ".join(columns)
    return f"INSERT INTO {table} ({names}) VALUES ({_placeholders(len(columns), start)})"  # noqa: S608 - fixed names


_EVENT_ARGS = len(rows.EVENT_COLUMNS)
_INSERT_EVENT = _insert("audit_events", rows.EVENT_COLUMNS)


def _with_event(insert_row: str) -> str:
    """One statement that inserts a row and records its event: both commit, or neither
    (a unique violation records nothing). The event's values come first ($1..$11)."""
    return f"WITH written AS ({insert_row}) {_INSERT_EVENT}"


_ADD_USER = _with_event(_insert("users", rows.USER_COLUMNS, _EVENT_ARGS + 1))
_ADD_CLIENT = _with_event(_insert("clients", rows.CLIENT_COLUMNS, _EVENT_ARGS + 1))
_CREATE_SESSION = _with_event(_insert("sessions", rows.SESSION_COLUMNS, _EVENT_ARGS + 1))
_UPSERT_KEY = (
    _insert("signing_keys", rows.KEY_COLUMNS)
    + " ON CONFLICT (kid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in rows.KEY_COLUMNS if c != "kid")
)

_REVOKED_AT = f"${_EVENT_ARGS + 1}"
_REASON = f"${_EVENT_ARGS + 2}"
_FIRST_KEY = _EVENT_ARGS + 3


def _revoke_and_record(where: str) -> str:
    """One statement that revokes the live sessions `where` selects and records the
    event, returning the revoked ids: the revocation and its audit row commit together,
    in autocommit, even though the request that decided them will fail. Parameters: the
    event ($1..$11), `revoked_at`, the reason, then `where`'s own from $14."""
    return f"""
WITH ended AS (
    UPDATE sessions SET revoked_at = {_REVOKED_AT}, revoked_reason = {_REASON}
    WHERE revoked_at IS NULL AND {where}
    RETURNING id, client_id
), recorded AS ({_INSERT_EVENT})
SELECT id, client_id FROM ended
"""  # noqa: S608 - `where` is one of this module's fixed clauses


_REVOKE_SESSION = _revoke_and_record(f"id = ${_FIRST_KEY}")
_REVOKE_USER_SESSIONS = _revoke_and_record(
    f"user_id = ${_FIRST_KEY} AND id IS DISTINCT FROM ${_FIRST_KEY + 1}"
)
# Inside the state-changing transactions: $1 revoked_at, $2 reason, then the keys.
_REVOKE_LIVE = (
    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 "
    "WHERE revoked_at IS NULL AND {where} RETURNING id, client_id"
)

_SESSION_WITH_USER = rows.SESSION_WITH_USER.format(param="$1")
_PRESENTATION = rows.PRESENTATION.format(client="$1", session="$2")

# The rotation. A compare-and-swap rather than `SELECT ... FOR UPDATE` then `UPDATE`:
# one round trip, and no row lock held while the answer crosses the network. Of N
# concurrent presenters of generation p, PostgreSQL lets exactly one UPDATE match: the
# others wait for its row lock, re-check `generation = $2` on the new row version, find
# p + 1 and change nothing (READ COMMITTED re-evaluation). `revoked_at IS NULL` makes a
# committed revocation final: no rotation can follow it. The columns set here carry no
# index, so the update is HOT and touches no index page.
_ADVANCE = """
UPDATE sessions
SET generation = $2 + 1, rotated_at = $3, last_used_at = $3, idle_expires_at = $4,
    rotated_ip = $5
WHERE id = $1 AND generation = $2 AND revoked_at IS NULL
"""

# The event's parameters as a SELECT list: outside VALUES, PostgreSQL would take the
# untyped parameters as text.
_EVENT_SELECT = ", ".join(
    f"${i}::{ {'at': 'timestamptz', 'generation': 'int8'}.get(c, 'text') }"
    for i, c in enumerate(rows.EVENT_COLUMNS, 1)
)

# A replay answered: the log written only if it is still as read (concurrent replays
# each count on the log the one before wrote), and its audit row with it. $1..$11 the
# event, then the session, the log as read, the log to write.
_RECORD_REPLAY = f"""
WITH logged AS (
    UPDATE sessions SET replay_newest = ${_EVENT_ARGS + 4}, replay_bits = ${_EVENT_ARGS + 5}
    WHERE id = ${_EVENT_ARGS + 1} AND replay_newest = ${_EVENT_ARGS + 2}
      AND replay_bits = ${_EVENT_ARGS + 3} AND revoked_at IS NULL
    RETURNING id
), recorded AS (
    INSERT INTO audit_events ({", ".join(rows.EVENT_COLUMNS)})
    SELECT {_EVENT_SELECT} WHERE EXISTS (SELECT 1 FROM logged)
)
SELECT count(*) FROM logged
"""  # noqa: S608 - fixed names

_KEEP = """
UPDATE sessions SET last_used_at = $3, idle_expires_at = $4
WHERE id = $1 AND generation = $2 AND revoked_at IS NULL
"""

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

_ADD_CODE = _with_event(_insert("authorization_codes", rows.CODE_COLUMNS, _EVENT_ARGS + 1))


def _redeem(with_session: bool) -> str:
    """One statement that uses the code if it is unused, opens its session (when there
    is one) and records the event, or does nothing at all. Parameters: the event
    ($1..$11), `used_at`, `session_id`, `code_hash`, then the session's columns. Of
    concurrent redemptions, the first takes the row lock; the others re-check `used_at
    IS NULL` on the row it committed, match nothing and insert nothing."""
    first = _EVENT_ARGS + 4
    columns = ", ".join(rows.SESSION_COLUMNS)
    values = _placeholders(len(rows.SESSION_COLUMNS), first)
    open_session = (
        f", opened AS (INSERT INTO sessions ({columns}) SELECT {values} FROM taken)"  # noqa: S608 - fixed names
        if with_session
        else ""
    )
    event_columns = ", ".join(rows.EVENT_COLUMNS)
    return f"""
WITH taken AS (
    UPDATE authorization_codes SET used_at = ${_EVENT_ARGS + 1}, session_id = ${_EVENT_ARGS + 2}
    WHERE code_hash = ${_EVENT_ARGS + 3} AND used_at IS NULL
    RETURNING code_hash
){open_session}, recorded AS (
    INSERT INTO audit_events ({event_columns})
    SELECT {_placeholders(_EVENT_ARGS)} FROM taken
)
SELECT count(*) FROM taken
"""  # noqa: S608 - fixed names


_REDEEM_WITH_SESSION = _redeem(with_session=True)
_BURN_CODE = _redeem(with_session=False)

# FOR UPDATE SKIP LOCKED: a row being rotated or revoked right now is left for the next
# batch, so the purge never waits on, or deadlocks with, the hot path. Without an index
# on idle_expires_at (one would make every rotation a non-HOT update) this scans until
# it has a batch; the purge is a background chore, the rotation is not.
_PURGE = """
WITH sessions_gone AS (
    DELETE FROM sessions WHERE id IN (
        SELECT id FROM sessions
        WHERE revoked_at < $1 OR idle_expires_at < $1 OR absolute_expires_at < $1
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 1
), codes_gone AS (
    DELETE FROM authorization_codes WHERE code_hash IN (
        SELECT code_hash FROM authorization_codes WHERE expires_at < $3
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 1
), events_gone AS (
    -- $4 NULL (no audit retention): `at < NULL` holds for no row.
    DELETE FROM audit_events WHERE id IN (
        SELECT id FROM audit_events WHERE at < $4
        ORDER BY at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM sessions_gone) + (SELECT count(*) FROM codes_gone)
    + (SELECT count(*) FROM events_gone)
"""

# What `_scanning` runs first. Only sequential scans: joins stay nested loops over keys
# (the purge deletes the rows its subqueries chose by their primary key, one by one).
_SCANS = "SET LOCAL enable_seqscan = on"

# Separate statements rather than `($1 IS NULL OR col = $1)`: once PostgreSQL switches a
# prepared statement to its generic plan, such a disjunction can no longer use the index.
_SESSIONS_OF_USER = (
    "SELECT * FROM sessions WHERE user_id = $1 AND ($2 OR revoked_at IS NULL) "
    "ORDER BY created_at DESC, id DESC"
)
_ALL_SESSIONS = (
    "SELECT * FROM sessions WHERE ($1 OR revoked_at IS NULL) ORDER BY created_at DESC, id DESC"
)

# Oldest first, by the filters given: (by type, since).
_LIST_EVENTS = {
    (False, False): "SELECT * FROM audit_events ORDER BY id LIMIT $1",
    (True, False): "SELECT * FROM audit_events WHERE type = $1 ORDER BY id LIMIT $2",
    (False, True): "SELECT * FROM audit_events WHERE at >= $1 ORDER BY id LIMIT $2",
    (True, True): "SELECT * FROM audit_events WHERE type = $1 AND at >= $2 ORDER BY id LIMIT $3",
}
# One session's events after an id (ids start at 1), by the index on session_id.
_LIST_SESSION_EVENTS = (
    "SELECT * FROM audit_events WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3"
)


def _ended(found: Sequence[asyncpg.Record]) -> list[EndedSession]:
    return [EndedSession(SessionId(r["id"]), ClientId(r["client_id"])) for r in found]


def _event_values(event: SecurityEvent) -> tuple[Any, ...]:
    return rows.event_values(event, to_db)


async def _keep_session_state(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset between uses: nothing to do. asyncpg's default reset sends
    `RESET ALL; CLOSE ALL; UNLISTEN *; ...`, one more round trip per operation; this store
    leaves no session state behind (no SET, cursor, LISTEN or advisory lock), and asyncpg
    still rolls back a transaction left open before calling this."""


class PostgresStore:
    """The `Store` port on PostgreSQL. Build it with `open_postgres`.

    Each operation is one statement in autocommit, or one short transaction; it commits
    everything it writes or nothing. Failures to reach the database in time are
    `StoreUnavailable`; a read whose connection died under it is tried once more on a
    fresh connection, a write only if asyncpg refused it before sending anything.
    """

    def __init__(self, dsn: str, *, timeout: float, pool_size: int, schema: str | None) -> None:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL URL starts with postgresql:// or postgres://")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._dsn = "postgresql://" + dsn.split("://", 1)[1]
        self._timeout = timeout
        self._pool_size = pool_size
        self._schema = schema
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._attempts: TurnBatcher[RotationAttempt, asyncpg.Record] = TurnBatcher(
            self._attempt_all, _MAX_BATCH
        )
        self.clock = DatabaseClock()
        """The deployment's one clock (H-18): the database's, sampled from answers."""

    # Plumbing

    def _server_settings(self) -> dict[str, str]:
        millis = max(1, round(self._timeout * 1000))  # 0 would mean "no limit"
        settings = {
            "application_name": "keyturn",
            # Every statement is prepared once per connection and looks rows up by key:
            # a plan made for the values of one call is no better than the generic one,
            # and making it again on every call cost the rotation statement (arrays,
            # three joins) more than half a millisecond of planning each time.
            "plan_cache_mode": "force_generic_plan",
            # ... and the plan is the same whatever the statistics say. Every statement
            # a request runs reads or writes rows by a key, for which an index lookup
            # per row is the plan at any table size; but a plan is made once per
            # connection, and on a freshly migrated or still growing database the
            # statistics describe a table smaller than it is by then (a plan made for
            # 200 sessions scanned all of them on every rotation at 10,000; a manual
            # ANALYZE gave 28 % more rotations). Without sequential scans, hash and
            # merge joins, the planner has only the index lookups to choose from. The
            # chores that do read whole tables turn scans back on for themselves
            # (`_scanning`).
            "enable_seqscan": "off",
            "enable_hashjoin": "off",
            "enable_mergejoin": "off",
            # Nor is the plan's cost: on a table never analysed (a bulk load or a restore
            # that autovacuum has not reached, or autovacuum off) a lookup by a non-unique
            # key is estimated at 0.4 % of the rows (42,500 of 10^7 sessions), and that
            # estimate launched two parallel workers and compiled JIT code on every call:
            # one user's session list took 33-64 ms instead of under one. A lookup by key
            # gains from neither.
            "max_parallel_workers_per_gather": "0",
            "jit": "off",
            "statement_timeout": str(millis),
            "lock_timeout": str(millis),
            "idle_in_transaction_session_timeout": str(4 * millis),
        }
        if self._schema:
            settings["search_path"] = self._schema
        return settings

    async def _ready_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise StoreUnavailable(detail="postgres: the store is closed")
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._closed:
                raise StoreUnavailable(detail="postgres: the store is closed")
            if self._pool is None:
                # A failed open leaves `_pool` unset: the next operation tries again, so
                # a process started while the database was down recovers by itself.
                self._pool = await asyncio.wait_for(
                    asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=self._pool_size,
                        timeout=self._timeout,
                        command_timeout=2 * self._timeout,
                        server_settings=self._server_settings(),
                        reset=_keep_session_state,
                        init=self._first_sample,
                    ),
                    2 * self._timeout,
                )
            return self._pool

    async def _run(self, work: Work[T], *, read: bool = False) -> T:
        """Run `work` on a pooled connection, mapping failures to domain errors."""
        try:
            try:
                return await self._attempt(work)
            except Exception as error:
                if connection_lost(error) and self._pool is not None:
                    # The database dropped a connection (a restart, a failover,
                    # pg_terminate_backend): its siblings in the pool are likely dead too,
                    # though asyncpg may not have noticed yet. Trust none opened before
                    # now; each is replaced at its next acquire.
                    await self._pool.expire_connections()
                if not may_repeat(error, read=read):
                    raise
            # On a fresh connection: after a restart, the first request need not fail.
            return await self._attempt(work)
        except Exception as error:
            mapped = translate(error)
            if mapped is error:
                raise
            raise mapped from error

    async def _attempt(self, work: Work[T]) -> T:
        pool = await self._ready_pool()
        # `asyncio.timeout` rather than asyncpg's `timeout=`, which runs the acquire
        # (and later the release) as a task of its own: measurably dearer per call.
        async with asyncio.timeout(self._timeout):
            conn = await pool.acquire()
        try:
            result = await work(conn)
        except TimeoutError:
            # The server stopped answering mid-statement: drop the connection now rather
            # than make the caller wait on top for the pool to cancel and reset it.
            conn.terminate()
            raise
        except BaseException:
            await self._release(pool, conn)
            raise
        await self._release(pool, conn)
        return result

    async def _release(self, pool: asyncpg.Pool, conn: Conn) -> None:
        # A connection the pool cannot reset is terminated by the pool itself; the
        # answer (or error) of the work is what the caller must see, not that.
        with contextlib.suppress(Exception):
            # No timeout: the reset it runs is keyturn's no-op, with no round trip.
            await pool.release(conn)

    async def _first_sample(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        """A new connection's first statement: the database's clock, so that a process
        reads it from its first decision (one round trip per connection, none per use)."""
        self._sample(await conn.fetchval("SELECT clock_timestamp()"))

    def _sample(self, database_time: Any) -> None:
        self.clock.sample(from_db(database_time), self.clock.steady())

    async def _tx(self, work: Work[T]) -> T:
        async def in_transaction(conn: Conn) -> T:
            async with conn.transaction():
                return await work(conn)

        return await self._run(in_transaction)

    async def _one(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async def fetch(conn: Conn) -> asyncpg.Record | None:
            return await conn.fetchrow(sql, *args)

        return await self._run(fetch, read=True)

    async def _all(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def fetch(conn: Conn) -> list[asyncpg.Record]:
            return list(await conn.fetch(sql, *args))

        return await self._run(fetch, read=True)

    async def _scanning(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """`sql`'s rows, planned with sequential scans allowed: for the chores that read
        a whole table (the purge, listing every session), which the connection's
        settings would otherwise send through an index in key order. Always inside
        the `SET LOCAL`, so the plan the connection caches for `sql` is made with it."""

        async def fetch(conn: Conn) -> list[asyncpg.Record]:
            async with conn.transaction():
                await conn.execute(_SCANS)
                return list(await conn.fetch(sql, *args))

        return await self._run(fetch)

    async def _ended(self, sql: str, *args: Any) -> list[EndedSession]:
        async def fetch(conn: Conn) -> list[EndedSession]:
            return _ended(await conn.fetch(sql, *args))

        return await self._run(fetch)

    @staticmethod
    async def _revoke_live(
        conn: Conn, where: str, keys: Sequence[Any], reason: RevocationReason, at: datetime
    ) -> list[EndedSession]:
        return _ended(await conn.fetch(_REVOKE_LIVE.format(where=where), at, reason.value, *keys))

    # Users

    async def add_user(self, user: User, event: SecurityEvent) -> None:
        values = rows.user_values(user, to_db)
        try:
            await self._run(lambda conn: conn.execute(_ADD_USER, *_event_values(event), *values))
        except AlreadyExists:
            raise AlreadyExists(f"A user named {user.username!r} exists.") from None

    async def get_user(self, user_id: UserId) -> User | None:
        row = await self._one("SELECT * FROM users WHERE id = $1", user_id)
        return rows.user_from(row, from_db) if row else None

    async def find_user(self, username: str) -> User | None:
        row = await self._one("SELECT * FROM users WHERE username = $1", username)
        return rows.user_from(row, from_db) if row else None

    async def list_users(self) -> list[User]:
        found = await self._all("SELECT * FROM users ORDER BY username")
        return [rows.user_from(r, from_db) for r in found]

    async def disable_user(
        self, user_id: UserId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:

        async def work(conn: Conn) -> list[EndedSession]:
            status = await conn.execute("UPDATE users SET enabled = false WHERE id = $1", user_id)
            if status != "UPDATE 1":
                raise NotFound("No such user.")
            ended = await self._revoke_live(
                conn, "user_id = $3", (user_id,), RevocationReason.USER_DISABLED, at
            )
            await conn.execute(_INSERT_EVENT, *_event_values(event))
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
                "UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3",
                password_hash,
                at,
                user_id,
            )
            if status != "UPDATE 1":
                raise NotFound("No such user.")
            if keep is not None:
                await conn.execute(
                    "UPDATE sessions SET authenticated_at = $1 WHERE id = $2 AND user_id = $3",
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
            await conn.execute(_INSERT_EVENT, *_event_values(event))
            return ended

        return await self._tx(work)

    # Clients

    async def add_client(self, client: Client, event: SecurityEvent) -> None:
        values = rows.client_values(client, to_db)
        try:
            await self._run(lambda conn: conn.execute(_ADD_CLIENT, *_event_values(event), *values))
        except AlreadyExists:
            raise AlreadyExists(f"A client {client.id!r} exists.") from None

    async def get_client(self, client_id: ClientId) -> Client | None:
        row = await self._one("SELECT * FROM clients WHERE id = $1", client_id)
        return rows.client_from(row, from_db) if row else None

    async def list_clients(self) -> list[Client]:
        found = await self._all("SELECT * FROM clients ORDER BY id")
        return [rows.client_from(r, from_db) for r in found]

    async def set_client_rotation(
        self, client_id: ClientId, rotation: RotationSettings, event: SecurityEvent
    ) -> None:

        async def work(conn: Conn) -> None:
            status = await conn.execute(
                "UPDATE clients SET rotation = $2 WHERE id = $1",
                client_id,
                rows.rotation_json(rotation),
            )
            if status != "UPDATE 1":
                raise NotFound("No such client.")
            await conn.execute(_INSERT_EVENT, *_event_values(event))

        await self._tx(work)

    async def disable_client(
        self, client_id: ClientId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:

        async def work(conn: Conn) -> list[EndedSession]:
            status = await conn.execute(
                "UPDATE clients SET enabled = false WHERE id = $1", client_id
            )
            if status != "UPDATE 1":
                raise NotFound("No such client.")
            ended = await self._revoke_live(
                conn, "client_id = $3", (client_id,), RevocationReason.CLIENT_DISABLED, at
            )
            await conn.execute(_INSERT_EVENT, *_event_values(event))
            return ended

        return await self._tx(work)

    # Sessions

    async def create_session(self, session: Session, event: SecurityEvent) -> None:
        values = rows.session_values(session, to_db)
        await self._run(lambda conn: conn.execute(_CREATE_SESSION, *_event_values(event), *values))

    async def get_session(self, session_id: SessionId) -> Session | None:
        row = await self._one("SELECT * FROM sessions WHERE id = $1", session_id)
        return rows.session_from(row, from_db) if row else None

    async def get_session_with_user(self, session_id: SessionId) -> tuple[Session, User] | None:
        row = await self._one(_SESSION_WITH_USER, session_id)
        if row is None:
            return None
        return rows.session_from(row, from_db), rows.user_from(row, from_db, "u_")

    async def get_presentation(self, client_id: ClientId, session_id: SessionId) -> Presentation:
        return rows.presentation_from(
            await self._one(_PRESENTATION, client_id, session_id), from_db
        )

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
                _ADVANCE, session_id, from_generation, at, idle_expires_at, ip
            )
        )
        return status == "UPDATE 1"

    async def record_replay(
        self, session_id: SessionId, read: ReplayLog, log: ReplayLog, event: SecurityEvent
    ) -> bool:
        count = await self._run(
            lambda conn: conn.fetchval(
                _RECORD_REPLAY,
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
            lambda conn: conn.execute(_KEEP, session_id, generation, at, idle_expires_at)
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
            _REVOKE_SESSION, *_event_values(event), at, reason.value, session_id
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
            _REVOKE_USER_SESSIONS, *_event_values(event), at, reason.value, user_id, keep
        )

    async def list_sessions(
        self, user_id: UserId | None = None, *, include_revoked: bool = False
    ) -> list[Session]:
        if user_id is None:
            found = await self._scanning(_ALL_SESSIONS, include_revoked)
        else:
            found = await self._all(_SESSIONS_OF_USER, user_id, include_revoked)
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
        found = await self._scanning(_PURGE, cutoff, batch_size, code_cutoff, audit_cutoff)
        return int(found[0][0])

    # Authorization codes

    async def add_authorization_code(self, code: AuthorizationCode, event: SecurityEvent) -> None:
        values = rows.code_values(code, to_db)
        await self._run(lambda conn: conn.execute(_ADD_CODE, *_event_values(event), *values))

    async def get_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        row = await self._one("SELECT * FROM authorization_codes WHERE code_hash = $1", code_hash)
        return rows.code_from(row, from_db) if row else None

    async def redeem_authorization_code(
        self, code_hash: str, at: datetime, session: Session | None, event: SecurityEvent
    ) -> bool:
        head = (*_event_values(event), to_db(at), session.id if session else None, code_hash)
        if session is None:
            taken = await self._run(lambda conn: conn.fetchval(_BURN_CODE, *head))
        else:
            values = rows.session_values(session, to_db)
            taken = await self._run(
                lambda conn: conn.fetchval(_REDEEM_WITH_SESSION, *head, *values)
            )
        return bool(taken)

    # Keys

    async def list_keys(self) -> list[StoredKey]:
        found = await self._all("SELECT * FROM signing_keys ORDER BY created_at, kid")
        return [rows.key_from(r, from_db) for r in found]

    async def save_keys(self, keys: Sequence[StoredKey], events: Sequence[SecurityEvent]) -> None:
        key_rows = [rows.key_values(key, to_db) for key in keys]
        event_rows = [_event_values(event) for event in events]

        async def work(conn: Conn) -> None:
            if key_rows:
                await conn.executemany(_UPSERT_KEY, key_rows)
            if event_rows:
                await conn.executemany(_INSERT_EVENT, event_rows)

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
        await self._run(lambda conn: conn.execute(_INSERT_EVENT, *values))

    async def list_events(
        self,
        *,
        type: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[RecordedEvent]:
        args = [value for value in (type, since) if value is not None]
        sql = _LIST_EVENTS[type is not None, since is not None]
        found = await self._all(sql, *args, limit)
        return [rows.event_from(r, from_db) for r in found]

    async def list_session_events(
        self, session_id: SessionId, *, after_id: int | None, limit: int
    ) -> list[RecordedEvent]:
        found = await self._all(_LIST_SESSION_EVENTS, session_id, after_id or 0, limit)
        return [rows.event_from(r, from_db) for r in found]

    # Life cycle

    async def ping(self) -> None:
        # The readiness probe keeps an otherwise idle host on the database's clock.
        row = await self._one("SELECT clock_timestamp() AS db_now")
        if row is not None:
            self._sample(row["db_now"])

    async def close(self) -> None:
        """Close the pool; every later operation raises `StoreUnavailable`."""
        self._closed = True
        async with self._opening:
            pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except TimeoutError:
                pool.terminate()


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
