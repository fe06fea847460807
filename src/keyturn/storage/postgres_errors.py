"""What an asyncpg, OS or timeout error means for the PostgreSQL store: which domain error
the caller sees, and whether the work may run again on another connection.

A failing database is `StoreUnavailable` (503 upstream), never a wrong answer.
"""

from __future__ import annotations

import asyncpg

from keyturn.core.errors import (
    AlreadyExists,
    InvalidRequest,
    KeyturnError,
    NotFound,
    StoreUnavailable,
)

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable, TLS failures
    TimeoutError,  # connect, pool acquire, command_timeout (asyncio's is this one)
    asyncpg.PostgresConnectionError,  # 08xxx: the connection was lost or refused
    asyncpg.InterfaceError,  # the pool or the connection is closed
    asyncpg.InternalClientError,  # the protocol was caught consuming the server's goodbye
    asyncpg.OperatorInterventionError,  # 57xxx: statement_timeout, admin shutdown, starting up
    asyncpg.LockNotAvailableError,  # 55P03: lock_timeout
    asyncpg.TransactionRollbackError,  # 40001 serialization failure, 40P01 deadlock
    asyncpg.InsufficientResourcesError,  # 53xxx: too many connections, disk full
    asyncpg.IdleInTransactionSessionTimeoutError,  # 25P03
    asyncpg.ReadOnlySQLTransactionError,  # 25006: pointed at a standby during a failover
    asyncpg.PostgresSystemError,  # 58xxx: I/O error on the server
    asyncpg.InvalidCachedStatementError,  # a migration changed a table under a statement
    asyncpg.UndefinedTableError,  # the schema is missing or not migrated: not ready
)
"""Every failure to get an answer in time, or at all."""

NEVER_SENT: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""asyncpg raises these before a byte of the statement leaves (a connection found closed,
a protocol still consuming the server's goodbye): nothing ran."""

LOST_IN_FLIGHT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    ConnectionError,
)
"""The connection died, possibly with the statement in flight: it may have committed."""


def connection_lost(error: Exception) -> bool:
    """Whether `error` says a connection is dead (and its pool siblings may be too)."""
    return isinstance(error, NEVER_SENT + LOST_IN_FLIGHT)


def may_repeat(error: Exception, *, read: bool) -> bool:
    """Whether work that failed with `error` may run again on another connection: any
    work if nothing was sent, a read also if the connection died under it. A write that
    was lost in flight may have committed, so it is never repeated: a repeated
    compare-and-swap would answer "lost the race" for a rotation it won."""
    if isinstance(error, asyncpg.ProtocolError):
        return False  # the server answered something unexpected: the statement may have run
    if isinstance(error, NEVER_SENT):
        return True
    return read and isinstance(error, LOST_IN_FLIGHT)


def translate(error: Exception) -> Exception:
    """The domain error for `error`; anything unknown (a bug) is returned unchanged."""
    if isinstance(error, KeyturnError):
        return error
    detail = f"postgres: {type(error).__name__}: {error}"
    if isinstance(error, asyncpg.UniqueViolationError):
        return AlreadyExists(detail=detail)
    if isinstance(error, asyncpg.ForeignKeyViolationError):
        return NotFound("No such user or client.", detail=detail)
    if isinstance(error, asyncpg.DataError | asyncpg.ProgramLimitExceededError):
        # A value PostgreSQL cannot hold: NUL, a number out of range, a key too long to
        # index. The store checks text before each query; this is the backstop.
        return InvalidRequest("The request holds a value that cannot be stored.", detail=detail)
    if isinstance(error, UNAVAILABLE):
        return StoreUnavailable(detail=detail)
    return error
