"""The SQLite store: the embedded default, correct with several processes on one file.

WAL journal, so readers never wait for the writer. Every write is one transaction begun
with `BEGIN IMMEDIATE`, which takes the write lock up front: two processes never both
read and then fail to upgrade to a write (no `SQLITE_BUSY` deadlock), and a busy writer
is waited for up to the timeout. `synchronous=FULL`: the WAL is synced to the disk
before a commit returns, so every answer that carries a token (or confirms a
revocation) is on the disk first. With `NORMAL` the last seconds of commits sit in the
operating system's cache: an OS crash, a power cut or a disk error that turns the
filesystem read-only (`errors=remount-ro`) loses them, and a device then holds a token
of a generation the store never reached, or a revoked session comes back
(docs/decisions/sqlite-durability.md).

The rotations of one turn of the event loop are one transaction (`TurnBatcher`): one
write lock and one synced commit for all of them, instead of one each, the cost that
bounds a synced store; alone, a rotation is one autocommit statement as before.

The connections (the event loop's own, and one thread's), checkpoints and the WAL
written ahead: `storage.sqlite_connections`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from keyturn.core.audit import SecurityEvent
from keyturn.core.errors import AlreadyExists, NotFound, StoreUnavailable
from keyturn.core.ids import ClientId, KeyId, SessionId, UserId
from keyturn.core.models import (
    Attempted,
    AuthorizationCode,
    Client,
    EndedSession,
    NotRotated,
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
from keyturn.storage.sql_reads import SqlReads
from keyturn.storage.sqlite_connections import SqliteConnections

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_BATCH = 64
"""Rotations in one transaction at most."""


def to_db(value: datetime) -> int:
    """Integer microseconds since the epoch: exact, and ordered like the times."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_db(value: Any) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


# The compare-and-swap of `attempt_rotation`, guarded by exactly the state on which the
# rules rotate (`keyturn.core.rotation.attempt_holds`, to which a property test holds
# it), checked by the statement itself on the state it writes. ?1 generation,
# ?2 session, ?3 client, ?4 salt, ?5 at, ?6 at + idle ttl, ?7 the authenticated
# client's secret hash, ?8 the request's peer address. Times are integer microseconds.
_ATTEMPT = """
UPDATE sessions
SET generation = ?1 + 1, rotated_at = ?5, last_used_at = ?5, rotated_ip = ?8,
    idle_expires_at = MIN(?6, absolute_expires_at)
WHERE id = ?2 AND generation = ?1 AND salt = ?4 AND client_id = ?3 AND dpop_jkt IS NULL
  AND revoked_at IS NULL AND ?5 < absolute_expires_at AND ?5 < idle_expires_at
  AND EXISTS (
    SELECT 1 FROM users u WHERE u.id = sessions.user_id AND u.enabled
      AND u.password_changed_at <= COALESCE(sessions.authenticated_at, sessions.created_at))
  AND EXISTS (SELECT 1 FROM clients c WHERE c.id = ?3 AND c.enabled AND c.secret_hash IS ?7)
RETURNING *
"""
_q = sql.for_sqlite


def sqlite_file(database_url: str) -> Path:
    """The path of `sqlite:///relative.db` or `sqlite:////absolute.db`."""
    if not database_url.startswith("sqlite:///"):
        raise ValueError("a SQLite URL looks like sqlite:///path/to/file.db")
    return Path(database_url.removeprefix("sqlite:///"))


class SqliteStore(SqliteConnections, SqlReads):
    def __init__(self, path: Path, *, timeout: float) -> None:
        SqliteConnections.__init__(self, path, timeout=timeout)
        SqlReads.__init__(self, to_db, from_db)
        self._attempts: TurnBatcher[tuple[Any, ...], sqlite3.Row | None] = TurnBatcher(
            self._attempt_all, _MAX_BATCH
        )

    async def _one(self, text: str, *args: Any) -> sqlite3.Row | None:
        statement = _q(text)

        def fetch(db: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = db.execute(statement, args).fetchone()
            return row

        return await self._soon(fetch)

    async def _all(self, text: str, *args: Any) -> list[sqlite3.Row]:
        statement = _q(text)
        return await self._run(lambda db: db.execute(statement, args).fetchall())

    def _event(self, db: sqlite3.Connection, event: SecurityEvent) -> None:
        db.execute(_q(sql.INSERT_EVENT), rows.event_values(event, to_db))

    def _revoke(
        self,
        db: sqlite3.Connection,
        where: str,
        args: tuple[Any, ...],
        reason: RevocationReason,
        at: datetime,
    ) -> list[EndedSession]:
        found = db.execute(
            _q(sql.REVOKE_LIVE.format(where=where)), (to_db(at), reason.value, *args)
        )
        return [EndedSession(SessionId(r["id"]), ClientId(r["client_id"])) for r in found]

    # Users

    async def add_user(self, user: User, event: SecurityEvent) -> None:

        def work(db: sqlite3.Connection) -> None:
            db.execute(_q(sql.INSERT_USER), rows.user_values(user, to_db))
            self._event(db, event)

        try:
            await self._write(work)
        except AlreadyExists:
            raise AlreadyExists(f"A user named {user.username!r} exists.") from None

    async def disable_user(
        self, user_id: UserId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        def work(db: sqlite3.Connection) -> list[EndedSession]:
            if db.execute(_q(sql.DISABLE_USER), (user_id,)).rowcount != 1:
                raise NotFound("No such user.")
            ended = self._revoke(db, "user_id = $3", (user_id,), RevocationReason.USER_DISABLED, at)
            self._event(db, event)
            return ended

        return await self._write(work)

    async def change_password(
        self,
        user_id: UserId,
        password_hash: str,
        at: datetime,
        keep: SessionId | None,
        event: SecurityEvent,
    ) -> list[EndedSession]:
        def work(db: sqlite3.Connection) -> list[EndedSession]:
            changed = db.execute(_q(sql.SET_PASSWORD), (password_hash, to_db(at), user_id))
            if changed.rowcount != 1:
                raise NotFound("No such user.")
            db.execute(_q(sql.AUTHENTICATED), (to_db(at), keep, user_id))
            ended = self._revoke(
                db,
                "user_id = $3 AND id IS NOT $4",
                (user_id, keep),
                RevocationReason.PASSWORD_CHANGED,
                at,
            )
            self._event(db, event)
            return ended

        return await self._write(work)

    # Clients

    async def add_client(self, client: Client, event: SecurityEvent) -> None:

        def work(db: sqlite3.Connection) -> None:
            db.execute(_q(sql.INSERT_CLIENT), rows.client_values(client, to_db))
            self._event(db, event)

        try:
            await self._write(work)
        except AlreadyExists:
            raise AlreadyExists(f"A client {client.id!r} exists.") from None

    async def set_client_rotation(
        self, client_id: ClientId, rotation: RotationSettings, event: SecurityEvent
    ) -> None:
        def work(db: sqlite3.Connection) -> None:
            changed = db.execute(_q(sql.SET_ROTATION), (client_id, rows.rotation_json(rotation)))
            if changed.rowcount != 1:
                raise NotFound("No such client.")
            self._event(db, event)

        await self._write(work)

    async def disable_client(
        self, client_id: ClientId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        def work(db: sqlite3.Connection) -> list[EndedSession]:
            changed = db.execute(_q(sql.DISABLE_CLIENT), (client_id,))
            if changed.rowcount != 1:
                raise NotFound("No such client.")
            ended = self._revoke(
                db, "client_id = $3", (client_id,), RevocationReason.CLIENT_DISABLED, at
            )
            self._event(db, event)
            return ended

        return await self._write(work)

    # Sessions

    async def create_session(self, session: Session, event: SecurityEvent) -> None:

        def work(db: sqlite3.Connection) -> None:
            db.execute(_q(sql.INSERT_SESSION), rows.session_values(session, to_db))
            self._event(db, event)

        await self._write(work, hot=True)

    async def attempt_rotation(self, attempt: RotationAttempt) -> Attempted:
        read = await self.get_presentation(attempt.client_id, attempt.session_id)
        if read.session is None:  # unknown client or session: no write
            return NotRotated(read)
        moved = await self._attempts.submit(
            (
                attempt.generation,
                attempt.session_id,
                attempt.client_id,
                attempt.salt,
                to_db(attempt.at),
                to_db(attempt.at + timedelta(seconds=attempt.idle_ttl)),
                attempt.client_secret_hash,
                attempt.ip,
            )
        )
        return NotRotated(read) if moved is None else Rotated(rows.session_from(moved, from_db))

    async def _attempt_all(self, batch: Sequence[tuple[Any, ...]]) -> list[sqlite3.Row | None]:
        """The compare-and-swaps of one turn, in order, in one transaction: each guards
        its own session, so one that finds its guard false changes nothing and the
        others go on. The read before each took no lock (WAL); the write lock is held
        for these statements only."""

        def work(db: sqlite3.Connection) -> list[sqlite3.Row | None]:
            return [db.execute(_ATTEMPT, values).fetchone() for values in batch]

        return await self._write(work, hot=True, one_statement=len(batch) == 1, writes=len(batch))

    async def advance_generation(
        self,
        session_id: SessionId,
        from_generation: int,
        at: datetime,
        idle_expires_at: datetime,
        ip: str | None = None,
    ) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            # Compare-and-swap: only the presenter that still sees `from_generation`
            # moves it on; every other racer changes nothing and re-reads.
            changed = db.execute(
                _q(sql.ADVANCE),
                (session_id, from_generation, to_db(at), to_db(idle_expires_at), ip),
            )
            return changed.rowcount == 1

        return await self._write(work, hot=True, one_statement=True)

    async def record_replay(
        self, session_id: SessionId, read: ReplayLog, log: ReplayLog, event: SecurityEvent
    ) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            # Compare-and-swap on the log as read: of concurrent replays, each counts
            # on the log the one before it wrote, never on a stale copy.
            changed = db.execute(
                "UPDATE sessions SET replay_newest = ?, replay_bits = ? "
                "WHERE id = ? AND replay_newest = ? AND replay_bits = ? AND revoked_at IS NULL",
                (log.newest, log.bits, session_id, read.newest, read.bits),
            )
            if changed.rowcount != 1:
                return False
            self._event(db, event)
            return True

        return await self._write(work, hot=True)

    async def keep_session(
        self, session_id: SessionId, generation: int, at: datetime, idle_expires_at: datetime
    ) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                _q(sql.KEEP), (session_id, generation, to_db(at), to_db(idle_expires_at))
            )
            return changed.rowcount == 1

        return await self._write(work, hot=True, one_statement=True)

    async def revoke_session(
        self,
        session_id: SessionId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
    ) -> list[EndedSession]:
        def work(db: sqlite3.Connection) -> list[EndedSession]:
            ended = self._revoke(db, "id = $3", (session_id,), reason, at)
            self._event(db, event)
            return ended

        return await self._write(work, hot=True)

    async def revoke_user_sessions(
        self,
        user_id: UserId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
        keep: SessionId | None = None,
    ) -> list[EndedSession]:
        def work(db: sqlite3.Connection) -> list[EndedSession]:
            ended = self._revoke(db, "user_id = $3 AND id IS NOT $4", (user_id, keep), reason, at)
            self._event(db, event)
            return ended

        return await self._write(work)

    async def list_sessions(
        self, user_id: UserId | None = None, *, include_revoked: bool = False
    ) -> list[Session]:
        if user_id is None:
            found = await self._all(sql.ALL_SESSIONS, include_revoked)
        else:
            found = await self._all(sql.SESSIONS_OF_USER, user_id, include_revoked)
        return [rows.session_from(r, from_db) for r in found]

    async def list_revoked(self, after: datetime, after_id: str, limit: int) -> list[Session]:
        at = to_db(after)
        found = await self._all(
            "SELECT * FROM sessions WHERE revoked_at IS NOT NULL "
            "AND (revoked_at > ? OR (revoked_at = ? AND id > ?)) "
            "ORDER BY revoked_at, id LIMIT ?",
            at,
            at,
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
        cutoff = to_db(now - timedelta(seconds=retention_seconds))
        codes_kept = retention_seconds if code_retention_seconds is None else code_retention_seconds
        code_cutoff = to_db(now - timedelta(seconds=codes_kept))
        audit_cutoff = (
            None
            if audit_retention_seconds is None
            else to_db(now - timedelta(seconds=audit_retention_seconds))
        )

        def work(db: sqlite3.Connection) -> int:
            deleted = db.execute(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions "
                "WHERE revoked_at < ? OR idle_expires_at < ? OR absolute_expires_at < ? "
                "LIMIT ?)",
                (cutoff, cutoff, cutoff, batch_size),
            )
            codes = db.execute(
                "DELETE FROM authorization_codes WHERE code_hash IN (SELECT code_hash "
                "FROM authorization_codes WHERE expires_at < ? LIMIT ?)",
                (code_cutoff, batch_size),
            )
            events = 0
            if audit_cutoff is not None:
                events = db.execute(
                    "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events "
                    "WHERE at < ? ORDER BY at LIMIT ?)",
                    (audit_cutoff, batch_size),
                ).rowcount
            return deleted.rowcount + codes.rowcount + events

        return await self._write(work)

    # Authorization codes

    async def add_authorization_code(self, code: AuthorizationCode, event: SecurityEvent) -> None:
        values = rows.code_values(code, to_db)

        def work(db: sqlite3.Connection) -> None:
            db.execute(_q(sql.INSERT_CODE), values)
            self._event(db, event)

        await self._write(work, hot=True)

    async def redeem_authorization_code(
        self, code_hash: str, at: datetime, session: Session | None, event: SecurityEvent
    ) -> bool:

        def work(db: sqlite3.Connection) -> bool:
            # The write lock is taken by BEGIN IMMEDIATE: one redemption at a time, and
            # only the first finds the code unused.
            taken = db.execute(
                "UPDATE authorization_codes SET used_at = ?, session_id = ? "
                "WHERE code_hash = ? AND used_at IS NULL",
                (to_db(at), session.id if session else None, code_hash),
            ).rowcount
            if taken != 1:
                return False
            if session is not None:
                db.execute(_q(sql.INSERT_SESSION), rows.session_values(session, to_db))
            self._event(db, event)
            return True

        return await self._write(work, hot=True)

    async def save_keys(self, keys: Sequence[StoredKey], events: Sequence[SecurityEvent]) -> None:
        def work(db: sqlite3.Connection) -> None:
            for key in keys:
                db.execute(_q(sql.UPSERT_KEY), rows.key_values(key, to_db))
            for event in events:
                self._event(db, event)

        await self._write(work)

    async def delete_keys(self, kids: Sequence[KeyId]) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM signing_keys WHERE kid = ?", [(k,) for k in kids])

        await self._write(work)

    # Audit

    async def record(self, event: SecurityEvent) -> None:
        await self._write(lambda db: self._event(db, event), hot=True)

    # Life cycle

    async def ping(self) -> None:
        await self._one("SELECT 1")


async def open_sqlite(database_url: str, *, timeout: float) -> SqliteStore:
    """Open the SQLite store of `database_url`; the file and schema must exist."""
    path = sqlite_file(database_url)
    if not path.exists():
        raise StoreUnavailable(detail=f"no database file at {path}; run keyturn migrate")
    store = SqliteStore(path, timeout=timeout)
    await store.ping()
    await store._run(store._reserve_wal)
    return store
