"""Hardening of what keyturn leaves on disk and says on the command line: the SQLite
database and its WAL and SHM files are private to their owner (H-13), and a command on
a database without the schema says to migrate it (H-17)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from alembic import command

from keyturn.storage.migrate import _config
from support.databases import drop_pg_schema
from support.server import server_process

SECRET = "h13-master-secret-Cw2x5J6WC31n5TWkyjxE91H-_qGiACQEpjjbbAbP_z4"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def keyturn(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `keyturn` command in a process whose umask is the usual 022."""
    return subprocess.run(
        [sys.executable, "-m", "keyturn", *args],
        env={**os.environ, "KEYTURN_SECRET_KEY": SECRET, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        umask=0o022,
        check=False,
    )


def test_h13_migrate_creates_the_database_0600(tmp_path: Path) -> None:
    db = tmp_path / "keyturn.db"
    url = f"sqlite:///{db}"
    migrated = keyturn("migrate", "--db", url, env={})
    assert migrated.returncode == 0, migrated.stderr
    assert mode(db) == 0o600
    # The first command that writes opens the WAL and SHM files: SQLite gives them the
    # database file's mode.
    added = keyturn("users", "add", "carol", "--password-stdin", "--db", url, env={},
                    stdin="a long enough password 1\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    for leftover in (tmp_path / "keyturn.db-wal", tmp_path / "keyturn.db-shm"):
        if leftover.exists():
            assert mode(leftover) == 0o600, leftover
    assert not [p for p in tmp_path.iterdir() if mode(p) & 0o077], sorted(
        (p.name, oct(mode(p))) for p in tmp_path.iterdir()
    )


def test_h13_migrate_keeps_an_existing_database_mode(tmp_path: Path) -> None:
    """An operator's own choice (a backup group that reads the file) is left alone."""
    db = tmp_path / "keyturn.db"
    db.touch()
    db.chmod(0o640)
    migrated = keyturn("migrate", "--db", f"sqlite:///{db}", env={})
    assert migrated.returncode == 0, migrated.stderr
    assert mode(db) == 0o640


def test_h13_serve_creates_database_wal_and_shm_0600(tmp_path: Path) -> None:
    db = tmp_path / "data" / "keyturn.db"
    env = {"KEYTURN_DATABASE_URL": f"sqlite:///{db}", "KEYTURN_SECRET_KEY": SECRET}
    old = os.umask(0o022)
    try:
        with server_process(env) as (base, _):
            # A write through the server: a failed login is audited.
            httpx.post(f"{base}/auth/login", json={"client_id": "x", "username": "u",
                                                   "password": "p"}, timeout=10)  # fmt: skip
            time.sleep(0.2)
            files = {p.name: mode(p) for p in db.parent.iterdir()}
    finally:
        os.umask(old)
    assert files["keyturn.db"] == 0o600, files
    assert files.get("keyturn.db-wal", 0o600) == 0o600, files
    assert files.get("keyturn.db-shm", 0o600) == 0o600, files
    assert "keyturn.db-wal" in files, files


def test_h17_users_add_without_schema_sqlite_says_migrate(tmp_path: Path) -> None:
    for db in (tmp_path / "absent.db", tmp_path / "empty.db"):
        if db.name == "empty.db":
            db.touch()
        added = keyturn("users", "add", "dave", "--password-stdin", "--db", f"sqlite:///{db}",
                        env={}, stdin="a long enough password 1\n")  # fmt: skip
        assert added.returncode == 1, added.stderr
        assert "keyturn migrate" in added.stderr, added.stderr
        assert "unreachable" not in added.stderr, added.stderr
    # Asking did not create the database it found missing.
    assert not (tmp_path / "absent.db").exists()


@pytest.fixture
def empty_pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema with no tables in it: created, never migrated."""
    name = f"t_{os.urandom(6).hex()}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres_url, timeout=5)
        try:
            await conn.execute(f"CREATE SCHEMA {name}")
        finally:
            await conn.close()

    asyncio.run(create())
    yield name
    drop_pg_schema(postgres_url, name)


def test_h17_users_add_without_schema_postgres_says_migrate(
    postgres_url: str, empty_pg_schema: str
) -> None:
    env = {"KEYTURN_DB_SCHEMA": empty_pg_schema}
    added = keyturn("users", "add", "dave", "--password-stdin", "--db", postgres_url, env=env,
                    stdin="a long enough password 1\n")  # fmt: skip
    assert added.returncode == 1, added.stderr
    assert "keyturn migrate" in added.stderr, added.stderr
    assert "unreachable" not in added.stderr, added.stderr


def test_h17_unreachable_postgres_is_still_called_unreachable(tmp_path: Path) -> None:
    """The migrate hint is for a database that answers without the schema, not for one
    that does not answer."""
    added = keyturn("users", "add", "dave", "--password-stdin", "--db",
                    "postgresql://root@127.0.0.1:1/none", env={"KEYTURN_DB_TIMEOUT": "2"},
                    stdin="a long enough password 1\n")  # fmt: skip
    assert added.returncode == 1, added.stderr
    assert "unreachable" in added.stderr, added.stderr


def test_h17_command_on_an_old_schema_says_migrate(tmp_path: Path) -> None:
    """A schema of an older release (here the first revision, before rotation policies)
    is named with its revision, and the fix."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(_config(url, None), "0001")
    added = keyturn("clients", "add", "x", "--type", "public", "--grant", "password",
                    "--db", url, env={})  # fmt: skip
    assert added.returncode == 1, added.stderr
    assert "revision 0001" in added.stderr, added.stderr
    assert "keyturn migrate" in added.stderr, added.stderr
