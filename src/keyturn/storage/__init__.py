"""Adapters of the store port: SQLite (the embedded default), PostgreSQL, and in-memory
for unit tests; and the schema migrations. Storage persists and locks; it decides
nothing."""

from __future__ import annotations

from keyturn.core.ports import Store


async def open_store(
    database_url: str, *, timeout: float, pool_size: int = 10, schema: str | None = None
) -> Store:
    """Open the store a database URL names: `memory:`, `sqlite:///path`,
    `postgresql://...`. The schema must exist (`upgrade`)."""
    if database_url.startswith("memory:"):
        from keyturn.storage.memory import MemoryStore

        return MemoryStore()
    if database_url.startswith("sqlite:"):
        from keyturn.storage.sqlite import open_sqlite

        return await open_sqlite(database_url, timeout=timeout)
    if database_url.startswith(("postgresql:", "postgres:")):
        from keyturn.storage.postgres import open_postgres

        return await open_postgres(
            database_url, timeout=timeout, pool_size=pool_size, schema=schema
        )
    raise ValueError("database_url must start with sqlite:, postgresql: or memory:")


def upgrade(database_url: str, schema: str | None = None) -> None:
    """Create or migrate the schema to the newest revision (no-op for `memory:`)."""
    if database_url.startswith("memory:"):
        return
    from keyturn.storage.migrate import upgrade as run_migrations

    run_migrations(database_url, schema=schema)
