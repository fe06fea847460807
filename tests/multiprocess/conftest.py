"""A migrated, seeded database that several OS processes share: SQLite file or a
PostgreSQL schema. Seeded with user alice and the public first-party client native."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyturn.storage import upgrade
from support.databases import create_pg_schema, drop_pg_schema
from support.engine import engine_with, seed


async def _seed(url: str, schema: str | None) -> None:
    engine = await engine_with(url, schema=schema)
    try:
        await seed(engine)
    finally:
        await engine.close()


@pytest.fixture(params=["sqlite", "postgres"])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        upgrade(url)
        asyncio.run(_seed(url, None))
        yield url, None
        return
    pg = request.getfixturevalue("postgres_url")
    name = create_pg_schema(pg)
    asyncio.run(_seed(pg, name))
    yield pg, name
    drop_pg_schema(pg, name)
