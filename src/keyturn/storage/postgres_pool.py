"""PostgreSQL connections for the store: a small asyncpg pool per process, its
timeouts, and its recovery when the database goes away and comes back.

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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg

from keyturn.core.errors import StoreUnavailable
from keyturn.storage.clocks import DatabaseClock
from keyturn.storage.postgres_errors import connection_lost, may_repeat, translate

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

T = TypeVar("T")
Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Work: TypeAlias = Callable[[Conn], Awaitable[T]]

# What `_scanning` runs first. Only sequential scans: joins stay nested loops over keys
# (the purge deletes the rows its subqueries chose by their primary key, one by one).
_SCANS = "SET LOCAL enable_seqscan = on"


def to_db(value: datetime) -> datetime:
    return value


def from_db(value: Any) -> datetime:
    moment: datetime = value
    # asyncpg hands timestamptz back in UTC already; convert only what is not.
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


async def _keep_session_state(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset between uses: nothing to do. asyncpg's default reset sends
    `RESET ALL; CLOSE ALL; UNLISTEN *; ...`, one more round trip per operation; this store
    leaves no session state behind (no SET, cursor, LISTEN or advisory lock), and asyncpg
    still rolls back a transaction left open before calling this."""


class PostgresPool:
    """The connections of one `PostgresStore`, opened at first use. Every failure to get
    an answer in time is `StoreUnavailable`; a read whose connection died under it is
    tried once more on a fresh connection, a write only if asyncpg refused it before
    sending anything."""

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
        self.clock = DatabaseClock()
        """The deployment's one clock (H-18): the database's, sampled from answers."""

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

    async def _one(self, text: str, *args: Any) -> asyncpg.Record | None:
        async def fetch(conn: Conn) -> asyncpg.Record | None:
            return await conn.fetchrow(text, *args)

        return await self._run(fetch, read=True)

    async def _all(self, text: str, *args: Any) -> list[asyncpg.Record]:
        async def fetch(conn: Conn) -> list[asyncpg.Record]:
            return list(await conn.fetch(text, *args))

        return await self._run(fetch, read=True)

    async def _scanning(self, text: str, *args: Any) -> list[asyncpg.Record]:
        """`text`'s rows, planned with sequential scans allowed: for the chores that read
        a whole table (the purge, listing every session), which the connection's
        settings would otherwise send through an index in key order. Always inside
        the `SET LOCAL`, so the plan the connection caches for `text` is made with it."""

        async def fetch(conn: Conn) -> list[asyncpg.Record]:
            async with conn.transaction():
                await conn.execute(_SCANS)
                return list(await conn.fetch(text, *args))

        return await self._run(fetch)

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
