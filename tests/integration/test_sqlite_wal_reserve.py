"""The SQLite store writes its WAL ahead when it opens, so commits overwrite a file
already on the disk at its size instead of growing it: an ext4 error can lose an
acknowledged append, not an acknowledged overwrite (docs/decisions/sqlite-durability.md;
measured end to end by the `read_only` scenario of tests/multiprocess/test_faults_under_load.py).

Real SQLite files; the crash is a real process that exits without closing its store."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bench.faults.services import SmallDisk, can_mount

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import StoreUnavailable
from keyturn.storage import upgrade
from keyturn.storage.sqlite import open_sqlite
from keyturn.storage.sqlite_connections import WAL_RESERVE as _WAL_RESERVE
from support.availability import missing

AT = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _wal(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def _event(n: int) -> SecurityEvent:
    return SecurityEvent(EventType.LOGIN_FAILED, AT, detail=f"probe {n}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "keyturn.db"
    upgrade(f"sqlite:///{path}")
    return path


async def test_opening_writes_the_wal_ahead_on_the_disk_not_as_a_hole(db: Path) -> None:
    store = await open_sqlite(f"sqlite:///{db}", timeout=1)
    try:
        stat = _wal(db).stat()
        assert stat.st_size == _WAL_RESERVE
        # Written, not a sparse file or an unwritten extent: the blocks are allocated.
        assert stat.st_blocks * 512 >= _WAL_RESERVE
    finally:
        await store.close()


async def test_commits_overwrite_the_reserve_in_place_and_are_all_read_back(db: Path) -> None:
    store = await open_sqlite(f"sqlite:///{db}", timeout=1)
    try:
        for n in range(300):
            await store.record(_event(n))
        # 300 commits of the loop's connection, each synced: the file did not grow.
        assert _wal(db).stat().st_size == _WAL_RESERVE
        found = await store.list_events(type=EventType.LOGIN_FAILED.value, limit=1000)
        assert sorted(e.event.detail or "" for e in found) == sorted(
            f"probe {n}" for n in range(300)
        )
    finally:
        await store.close()


async def test_a_second_store_on_the_same_file_leaves_the_frames_of_the_first(db: Path) -> None:
    first = await open_sqlite(f"sqlite:///{db}", timeout=1)
    try:
        for n in range(20):
            await first.record(_event(n))
        before = _wal(db).read_bytes()
        second = await open_sqlite(f"sqlite:///{db}", timeout=1)
        try:
            assert _wal(db).read_bytes() == before
            assert len(await second.list_events(limit=1000)) >= 20
        finally:
            await second.close()
    finally:
        await first.close()


def test_a_process_that_dies_after_its_commits_leaves_every_one_recoverable(db: Path) -> None:
    """The WAL past its last frame is zeros: SQLite's recovery must stop there and keep
    every frame before it. The writer exits without closing anything (no checkpoint,
    the WAL and its zeros left as a crash leaves them)."""
    program = textwrap.dedent(
        f"""
        import asyncio, os
        from datetime import UTC, datetime
        from keyturn.core.audit import EventType, SecurityEvent
        from keyturn.storage.sqlite import open_sqlite

        async def main():
            store = await open_sqlite({f"sqlite:///{db}"!r}, timeout=1)
            for n in range(50):
                await store.record(SecurityEvent(
                    EventType.LOGIN_FAILED, datetime(2026, 6, 1, 12, tzinfo=UTC),
                    detail=f"crash {{n}}"))
            print("committed", flush=True)
            os._exit(0)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "committed", done.stderr
    assert _wal(db).stat().st_size == _WAL_RESERVE  # left as the crash left it

    async def read_back() -> list[str]:
        store = await open_sqlite(f"sqlite:///{db}", timeout=1)
        try:
            found = await store.list_events(type=EventType.LOGIN_FAILED.value, limit=1000)
            return sorted(e.event.detail or "" for e in found)
        finally:
            await store.close()

    assert asyncio.run(read_back()) == sorted(f"crash {n}" for n in range(50))
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_a_disk_without_room_for_the_reserve_leaves_the_store_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a disk too full for the whole reserve the store says so and opens anyway:
    its commits go into the part of the WAL that was written."""
    why = can_mount("tmpfs")
    if why is not None:
        missing("a tmpfs mount", "this machine", why)
    disk = SmallDisk("tmpfs", 4)
    try:
        db = disk.path / "keyturn.db"
        upgrade(f"sqlite:///{db}")
        room = os.statvfs(disk.path)
        (disk.path / "filler").write_bytes(bytes(room.f_bavail * room.f_frsize - (1 << 20)))
        caplog.set_level(logging.WARNING, logger="keyturn.storage")
        store = await open_sqlite(f"sqlite:///{db}", timeout=1)
        try:
            said = [r.getMessage() for r in caplog.records]
            assert any("not written ahead" in m and "No space" in m for m in said), said
            assert _wal(db).stat().st_size < _WAL_RESERVE
            for n in range(20):
                await store.record(_event(n))
            assert len(await store.list_events(limit=1000)) == 20
        finally:
            await store.close()
    finally:
        disk.close()


async def test_a_wal_that_links_elsewhere_is_refused_and_its_target_untouched(
    db: Path, tmp_path: Path
) -> None:
    """Whoever can put a `-wal` link beside the database gets nothing written through
    it: SQLite refuses a linked WAL, and the store's own write ahead never follows a
    link (`O_NOFOLLOW`)."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"not keyturn's")
    _wal(db).symlink_to(victim)
    with pytest.raises(StoreUnavailable):
        await open_sqlite(f"sqlite:///{db}", timeout=1)
    assert victim.read_bytes() == b"not keyturn's"


async def test_a_wal_that_is_a_fifo_does_not_stall_the_start(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIFO at the WAL's path (no reader, no writer) is not written ahead and does not
    block the start: the store says so and opens."""
    os.mkfifo(_wal(db))
    caplog.set_level(logging.WARNING, logger="keyturn.storage")
    store = await asyncio.wait_for(open_sqlite(f"sqlite:///{db}", timeout=1), 10)
    try:
        said = [r.getMessage() for r in caplog.records]
        assert any("not written ahead" in m and "not a regular file" in m for m in said), said
    finally:
        await store.close()
