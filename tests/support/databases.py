"""Fresh PostgreSQL schemas for tests: created, migrated, dropped."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg

from keyturn.storage import upgrade


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_schema(url: str) -> str:
    """Create and migrate a fresh schema; returns its name."""
    name = f"t_{secrets.token_hex(6)}"
    asyncio.run(_admin(url, f"CREATE SCHEMA {name}"))
    upgrade(url, schema=name)
    return name


def drop_pg_schema(url: str, name: str) -> None:
    asyncio.run(_admin(url, f"DROP SCHEMA IF EXISTS {name} CASCADE"))
