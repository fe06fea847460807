"""Schema migrations with Alembic, run from code (no alembic.ini): one migration set,
written dialect-neutral, serves SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def sqlalchemy_url(database_url: str) -> str:
    """The SQLAlchemy URL of a keyturn database URL."""
    if database_url.startswith("postgres://"):
        database_url = "postgresql://" + database_url.removeprefix("postgres://")
    if database_url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + database_url.removeprefix("postgresql://")
    return database_url


def _config(database_url: str, schema: str | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sqlalchemy_url(database_url)
    config.attributes["schema"] = schema
    return config


def create_private_database(database_url: str) -> None:
    """Create the file of a `sqlite:///path` URL with mode 0600 if it does not exist.

    SQLite would create it with 0644 (less the umask), and gives its `-wal` and `-shm`
    files the database file's mode: made first here, all three hold password hashes and
    sealed keys for the owner alone, like the master secret beside them. An existing
    file keeps the mode its operator gave it."""
    if not database_url.startswith("sqlite:///"):
        return
    path = database_url.removeprefix("sqlite:///").partition("?")[0]
    if not path or path == ":memory:":
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def upgrade(database_url: str, schema: str | None = None) -> None:
    """Migrate to the newest revision. Blocking: call it outside the event loop."""
    create_private_database(database_url)
    command.upgrade(_config(database_url, schema), "head")


def head_revision() -> str | None:
    """The newest revision of this keyturn's migrations."""
    return ScriptDirectory.from_config(_config("sqlite://", None)).get_current_head()


def current_revision(database_url: str, schema: str | None = None) -> str | None:
    """The revision the database is at, `None` if it was never migrated."""
    url = sqlalchemy_url(database_url)
    if url.startswith("postgresql+asyncpg://"):
        return _pg_revision(database_url, schema)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _pg_revision(database_url: str, schema: str | None) -> str | None:
    import asyncio

    import asyncpg

    async def read() -> str | None:
        dsn = database_url.replace("postgres://", "postgresql://", 1)
        settings = {"search_path": schema} if schema else {}
        conn = await asyncpg.connect(dsn, server_settings=settings)
        try:
            exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
            if not exists:
                return None
            value: str | None = await conn.fetchval("SELECT version_num FROM alembic_version")
            return value
        finally:
            await conn.close()

    return asyncio.run(read())
