"""SQLite connections for the store: one on the event loop's thread for the hot
operations, one on a thread of the store's own for everything that may wait.

The hot operations (single-row reads, the rotation's compare-and-swap, a session's
insert or revocation) run on the event loop's own thread, on a connection that never
waits for a lock (`busy_timeout = 0`): a WAL read or an uncontended one-row write takes
tens of microseconds, far less than handing it to another thread and back. Whenever that
connection meets a lock (another process is writing), the operation is rolled back and
run again on one dedicated thread per store, whose connection waits up to the timeout,
so the event loop never blocks on a lock wait. So do every listing, bulk revocation and
purge. The loop's connection never checkpoints the WAL itself; every
`_CHECKPOINT_EVERY` of its commits, the thread does (a checkpoint syncs the disk).

The WAL file is written ahead to `WAL_RESERVE` bytes of zeros when the store opens, so
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from keyturn.core.errors import AlreadyExists, StoreUnavailable

T = TypeVar("T")

_CHECKPOINT_EVERY = 1000
"""Row writes of the loop's connection between two checkpoints."""
WAL_RESERVE = 8 * 1024 * 1024
"""Bytes of WAL written ahead: more than the WAL grows to between two checkpoints of
`_CHECKPOINT_EVERY` commits under load (5.0 MB measured with two workers at 1,300
rotations/s)."""
log = logging.getLogger("keyturn.storage")
_LOCKED = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class _Locked(Exception):
    """The loop's connection met a lock: run the operation on the thread instead."""


class SqliteConnections:
    """The connections of one `SqliteStore` and how an operation runs on them."""

    def __init__(self, path: Path, *, timeout: float) -> None:
        self._path = path
        self._timeout = timeout
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyturn-sqlite")
        self._db: sqlite3.Connection | None = None
        self._loop_db: sqlite3.Connection | None = None
        self._loop_writes = 0

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
        """Grow the `-wal` file to `WAL_RESERVE` bytes of zeros written and synced, while
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
                for at in range(size, WAL_RESERVE, len(zeros)):
                    os.pwrite(fd, zeros[: WAL_RESERVE - at], at)
                if size < WAL_RESERVE:
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
