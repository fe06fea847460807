"""Alembic's environment for keyturn: SQLite through the standard library driver,
PostgreSQL through asyncpg; the URL and schema come from `keyturn.storage.migrate`."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config
url: str = config.attributes["url"]
schema: str | None = config.attributes.get("schema")


def run(connection: Connection) -> None:
    context.configure(connection=connection, version_table_schema=schema)
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["server_settings"] = {"search_path": schema}
    engine = create_async_engine(url, connect_args=connect_args)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


if url.startswith("postgresql+asyncpg://"):
    asyncio.run(run_async())
else:
    sync_engine = create_engine(url)
    try:
        with sync_engine.begin() as sync_connection:
            run(sync_connection)
    finally:
        sync_engine.dispose()
