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

The hot operations (single-row reads, the rotation's compare-and-swap, a session's
insert or revocation) run on the event loop's own thread, on a connection that never
waits for a lock (`busy_timeout = 0`): a WAL read or an uncontended one-row write takes
tens of microseconds, far less than handing it to another thread and back. Whenever that
connection meets a lock (another process is writing), the operation is rolled back and
run again on one dedicated thread per store, whose connection waits up to the timeout,
so the event loop never blocks on a lock wait. So do every listing, bulk revocation and
purge. The loop's connection never checkpoints the WAL itself; every
`_CHECKPOINT_EVERY` of its commits, the thread does (a checkpoint syncs the disk).

The WAL file is written ahead to `_WAL_RESERVE` bytes of zeros when the store opens, so
commits write over a file already on the disk at its size instead of growing it: on
ext4 an error that turns the file system read-only can lose an acknowledged append
(the file's new size with it), never an acknowledged overwrite
(docs/decisions/sqlite-durability.md). SQLite's recovery stops at the first frame that
is not valid, as it does past the old frames it leaves after every restart of the WAL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

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

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHECKPOINT_EVERY = 1000
"""Row writes of the loop's connection between two checkpoints."""
_MAX_BATCH = 64
"""Rotations in one transaction at most."""
_WAL_RESERVE = 8 * 1024 * 1024
"""Bytes of WAL written ahead: more than the WAL grows to between two checkpoints of
`_CHECKPOINT_EVERY` commits under load (5.0 MB measured with two workers at 1,300
rotations/s)."""
log = logging.getLogger("keyturn.storage")
_LOCKED = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class _Locked(Exception):
    """The loop's connection met a lock: run the operation on the thread instead."""


def to_db(value: datetime) -> int:
    """Integer microseconds since the epoch: exact, and ordered like the times."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_db(value: Any) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608 - fixed names


_INSERT_USER = _insert("users", rows.USER_COLUMNS)
_INSERT_CLIENT = _insert("clients", rows.CLIENT_COLUMNS)
_INSERT_SESSION = _insert("sessions", rows.SESSION_COLUMNS)
_INSERT_EVENT = _insert("audit_events", rows.EVENT_COLUMNS)
_INSERT_CODE = _insert("authorization_codes", rows.CODE_COLUMNS)
_UPSERT_KEY = (
    _insert("signing_keys", rows.KEY_COLUMNS)
    + " ON CONFLICT (kid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in rows.KEY_COLUMNS if c != "kid")
)
_PRESENTATION = rows.PRESENTATION.format(client="?1", session="?2")

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
_REVOKE_LIVE = (
    "UPDATE sessions SET revoked_at = ?, revoked_reason = ? "
    "WHERE revoked_at IS NULL AND {where} RETURNING id, client_id"
)


def sqlite_file(database_url: str) -> Path:
    """The path of `sqlite:///relative.db` or `sqlite:////absolute.db`."""
    if not database_url.startswith("sqlite:///"):
        raise ValueError("a SQLite URL looks like sqlite:///path/to/file.db")
    return Path(database_url.removeprefix("sqlite:///"))


class SqliteStore:
    def __init__(self, path: Path, *, timeout: float) -> None:
        self._path = path
        self._timeout = timeout
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyturn-sqlite")
        self._db: sqlite3.Connection | None = None
        self._loop_db: sqlite3.Connection | None = None
        self._loop_writes = 0
        self._attempts: TurnBatcher[tuple[Any, ...], sqlite3.Row | None] = TurnBatcher(
            self._attempt_all, _MAX_BATCH
        )

    # Plumbing

    def _connect(self, *, wait: bool = True) -> sqlite3.Connection:
        timeout = self._timeout if wait else 0.0
        db = sqlite3.connect(
            self._path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        if not wait:
            db.execute("PRAGMA wal_autocheckpoint = 0")
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._connect()
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            return work(self._conn())

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call)
        except sqlite3.IntegrityError as error:
            raise AlreadyExists(detail=str(error)) from None
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as error:
            # Locked past the timeout, disk I/O error, unreadable file: nothing we
            # can answer for. The request fails with 503 and nothing half-written.
            raise StoreUnavailable(detail=f"sqlite: {error}") from None

    def _on_loop(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` on the event loop's connection; `_Locked` if it met a lock (nothing of
        it is left: a transaction it began is rolled back)."""
        try:
            if self._loop_db is None:
                self._loop_db = self._connect(wait=False)
            return work(self._loop_db)
        except sqlite3.IntegrityError as error:
            raise AlreadyExists(detail=str(error)) from None
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode in _LOCKED:
                raise _Locked from None
            raise StoreUnavailable(detail=f"sqlite: {error}") from None
        except sqlite3.DatabaseError as error:
            raise StoreUnavailable(detail=f"sqlite: {error}") from None

    async def _soon(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` on the loop's thread when no lock is in the way, else on the store's
        thread, which waits for the lock. Either way the caller yields to the loop once,
        so a task that loops over store calls cannot starve the others."""
        await asyncio.sleep(0)
        try:
            return self._on_loop(work)
        except _Locked:
            return await self._run(work)

    async def _write(
        self,
        work: Callable[[sqlite3.Connection], T],
        *,
        hot: bool = False,
        one_statement: bool = False,
        writes: int = 1,
    ) -> T:
        """`work` in one `BEGIN IMMEDIATE` transaction. `hot`: short row writes (`writes`
        of them, counted towards the next checkpoint), tried on the loop's thread first.
        `one_statement`: `work` runs a single statement, atomic on its own
        (autocommit), so no `BEGIN`/`COMMIT` around it."""

        def transaction(db: sqlite3.Connection) -> T:
            if one_statement:
                return work(db)
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result

        if not hot:
            return await self._run(transaction)
        result = await self._soon(transaction)
        before = self._loop_writes
        self._loop_writes += writes
        if self._loop_writes // _CHECKPOINT_EVERY != before // _CHECKPOINT_EVERY:
            self._checkpoint_soon()
        return result

    def _reserve_wal(self, db: sqlite3.Connection) -> None:
        """Grow the `-wal` file to `_WAL_RESERVE` bytes of zeros written and synced, while
        holding the write lock (no other connection appends frames meanwhile). Past its
        size nothing of the WAL is valid, so only the end is written. Best effort: a disk
        that refuses it leaves the store as it was, and says so."""
        wal = self._path.with_name(self._path.name + "-wal")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            log.warning("sqlite: the WAL is not written ahead (%s)", error)
            return
        try:
            # Never through a link, and never into anything but a plain file: whoever
            # could put a `-wal` link beside the database must not get zeros written
            # at the end of another file (a FIFO must not block the start either).
            fd = os.open(wal, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                found = os.fstat(fd)
                if not stat.S_ISREG(found.st_mode):
                    raise OSError(f"{wal} is not a regular file")
                size = found.st_size
                zeros = bytes(1 << 20)
                for at in range(size, _WAL_RESERVE, len(zeros)):
                    os.pwrite(fd, zeros[: _WAL_RESERVE - at], at)
                if size < _WAL_RESERVE:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            log.warning("sqlite: the WAL is not written ahead (%s)", error)
        finally:
            db.execute("ROLLBACK")

    def _checkpoint_soon(self) -> None:
        """A passive WAL checkpoint on the store's thread, not waited for (it never
        blocks writers; a failed one is tried again at the next round)."""

        def checkpoint(db: sqlite3.Connection) -> None:
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                return

        self._thread.submit(lambda: checkpoint(self._conn()))

    async def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        def fetch(db: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = db.execute(sql, args).fetchone()
            return row

        return await self._soon(fetch)

    async def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return await self._run(lambda db: db.execute(sql, args).fetchall())

    def _event(self, db: sqlite3.Connection, event: SecurityEvent) -> None:
        db.execute(_INSERT_EVENT, rows.event_values(event, to_db))

    def _revoke(
        self,
        db: sqlite3.Connection,
        where: str,
        args: tuple[Any, ...],
        reason: RevocationReason,
        at: datetime,
    ) -> list[EndedSession]:
        found = db.execute(_REVOKE_LIVE.format(where=where), (to_db(at), reason.value, *args))
        return [EndedSession(SessionId(r["id"]), ClientId(r["client_id"])) for r in found]

    # Users

    async def add_user(self, user: User, event: SecurityEvent) -> None:

        def work(db: sqlite3.Connection) -> None:
            db.execute(_INSERT_USER, rows.user_values(user, to_db))
            self._event(db, event)

        try:
            await self._write(work)
        except AlreadyExists:
            raise AlreadyExists(f"A user named {user.username!r} exists.") from None

    async def get_user(self, user_id: UserId) -> User | None:
        row = await self._one("SELECT * FROM users WHERE id = ?", user_id)
        return rows.user_from(row, from_db) if row else None

    async def find_user(self, username: str) -> User | None:
        row = await self._one("SELECT * FROM users WHERE username = ?", username)
        return rows.user_from(row, from_db) if row else None

    async def list_users(self) -> list[User]:
        return [
            rows.user_from(r, from_db)
            for r in await self._all("SELECT * FROM users ORDER BY username")
        ]

    async def disable_user(
        self, user_id: UserId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        def work(db: sqlite3.Connection) -> list[EndedSession]:
            if db.execute("UPDATE users SET enabled = 0 WHERE id = ?", (user_id,)).rowcount != 1:
                raise NotFound("No such user.")
            ended = self._revoke(db, "user_id = ?", (user_id,), RevocationReason.USER_DISABLED, at)
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
            changed = db.execute(
                "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                (password_hash, to_db(at), user_id),
            )
            if changed.rowcount != 1:
                raise NotFound("No such user.")
            db.execute(
                "UPDATE sessions SET authenticated_at = ? WHERE id = ? AND user_id = ?",
                (to_db(at), keep, user_id),
            )
            ended = self._revoke(
                db,
                "user_id = ? AND id IS NOT ?",
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
            db.execute(_INSERT_CLIENT, rows.client_values(client, to_db))
            self._event(db, event)

        try:
            await self._write(work)
        except AlreadyExists:
            raise AlreadyExists(f"A client {client.id!r} exists.") from None

    async def get_client(self, client_id: ClientId) -> Client | None:
        row = await self._one("SELECT * FROM clients WHERE id = ?", client_id)
        return rows.client_from(row, from_db) if row else None

    async def list_clients(self) -> list[Client]:
        return [
            rows.client_from(r, from_db)
            for r in await self._all("SELECT * FROM clients ORDER BY id")
        ]

    async def set_client_rotation(
        self, client_id: ClientId, rotation: RotationSettings, event: SecurityEvent
    ) -> None:
        def work(db: sqlite3.Connection) -> None:
            changed = db.execute(
                "UPDATE clients SET rotation = ? WHERE id = ?",
                (rows.rotation_json(rotation), client_id),
            )
            if changed.rowcount != 1:
                raise NotFound("No such client.")
            self._event(db, event)

        await self._write(work)

    async def disable_client(
        self, client_id: ClientId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        def work(db: sqlite3.Connection) -> list[EndedSession]:
            changed = db.execute("UPDATE clients SET enabled = 0 WHERE id = ?", (client_id,))
            if changed.rowcount != 1:
                raise NotFound("No such client.")
            ended = self._revoke(
                db, "client_id = ?", (client_id,), RevocationReason.CLIENT_DISABLED, at
            )
            self._event(db, event)
            return ended

        return await self._write(work)

    # Sessions

    async def create_session(self, session: Session, event: SecurityEvent) -> None:

        def work(db: sqlite3.Connection) -> None:
            db.execute(_INSERT_SESSION, rows.session_values(session, to_db))
            self._event(db, event)

        await self._write(work, hot=True)

    async def get_session(self, session_id: SessionId) -> Session | None:
        row = await self._one("SELECT * FROM sessions WHERE id = ?", session_id)
        return rows.session_from(row, from_db) if row else None

    async def get_session_with_user(self, session_id: SessionId) -> tuple[Session, User] | None:
        row = await self._one(rows.SESSION_WITH_USER.format(param="?"), session_id)
        if row is None:
            return None
        return rows.session_from(row, from_db), rows.user_from(row, from_db, "u_")

    async def get_presentation(self, client_id: ClientId, session_id: SessionId) -> Presentation:
        return rows.presentation_from(
            await self._one(_PRESENTATION, client_id, session_id), from_db
        )

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
                "UPDATE sessions SET generation = ? + 1, rotated_at = ?, last_used_at = ?, "
                "idle_expires_at = ?, rotated_ip = ? "
                "WHERE id = ? AND generation = ? AND revoked_at IS NULL",
                (
                    from_generation,
                    to_db(at),
                    to_db(at),
                    to_db(idle_expires_at),
                    ip,
                    session_id,
                    from_generation,
                ),
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
                "UPDATE sessions SET last_used_at = ?, idle_expires_at = ? "
                "WHERE id = ? AND generation = ? AND revoked_at IS NULL",
                (to_db(at), to_db(idle_expires_at), session_id, generation),
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
            ended = self._revoke(db, "id = ?", (session_id,), reason, at)
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
            ended = self._revoke(db, "user_id = ? AND id IS NOT ?", (user_id, keep), reason, at)
            self._event(db, event)
            return ended

        return await self._write(work)

    async def list_sessions(
        self, user_id: UserId | None = None, *, include_revoked: bool = False
    ) -> list[Session]:
        where = ["1 = 1"]
        args: list[Any] = []
        if user_id is not None:
            where.append("user_id = ?")
            args.append(user_id)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        found = await self._all(
            f"SELECT * FROM sessions WHERE {' AND '.join(where)} "  # noqa: S608 - fixed clauses
            "ORDER BY created_at DESC, id DESC",
            *args,
        )
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
            db.execute(_INSERT_CODE, values)
            self._event(db, event)

        await self._write(work, hot=True)

    async def get_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        row = await self._one("SELECT * FROM authorization_codes WHERE code_hash = ?", code_hash)
        return rows.code_from(row, from_db) if row else None

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
                db.execute(_INSERT_SESSION, rows.session_values(session, to_db))
            self._event(db, event)
            return True

        return await self._write(work, hot=True)

    async def list_keys(self) -> list[StoredKey]:
        found = await self._all("SELECT * FROM signing_keys ORDER BY created_at, kid")
        return [rows.key_from(r, from_db) for r in found]

    async def save_keys(self, keys: Sequence[StoredKey], events: Sequence[SecurityEvent]) -> None:
        def work(db: sqlite3.Connection) -> None:
            for key in keys:
                db.execute(_UPSERT_KEY, rows.key_values(key, to_db))
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

    async def list_events(
        self,
        *,
        type: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[RecordedEvent]:
        where = ["1 = 1"]
        args: list[Any] = []
        if type is not None:
            where.append("type = ?")
            args.append(type)
        if since is not None:
            where.append("at >= ?")
            args.append(to_db(since))
        found = await self._all(
            f"SELECT * FROM audit_events WHERE {' AND '.join(where)} "  # noqa: S608 - fixed clauses
            "ORDER BY id LIMIT ?",
            *args,
            limit,
        )
        return [rows.event_from(r, from_db) for r in found]

    async def list_session_events(
        self, session_id: SessionId, *, after_id: int | None, limit: int
    ) -> list[RecordedEvent]:
        found = await self._all(
            "SELECT * FROM audit_events WHERE session_id = ? AND id > ? ORDER BY id LIMIT ?",
            session_id,
            after_id or 0,  # ids start at 1
            limit,
        )
        return [rows.event_from(r, from_db) for r in found]

    # Life cycle

    async def ping(self) -> None:
        await self._one("SELECT 1")

    async def close(self) -> None:
        if self._loop_db is not None:
            self._loop_db.close()
            self._loop_db = None

        def shut(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None

        if self._db is not None:
            await self._run(shut)
        self._thread.shutdown(wait=True)


async def open_sqlite(database_url: str, *, timeout: float) -> SqliteStore:
    """Open the SQLite store of `database_url`; the file and schema must exist."""
    path = sqlite_file(database_url)
    if not path.exists():
        raise StoreUnavailable(detail=f"no database file at {path}; run keyturn migrate")
    store = SqliteStore(path, timeout=timeout)
    await store.ping()
    await store._run(store._reserve_wal)
    return store
