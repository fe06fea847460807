"""Fixtures shared by every layer of tests.

Real services, never mocks of them:

- `postgres_url`: a reachable PostgreSQL (`KEYTURN_TEST_PG`, default
  `postgresql://root@127.0.0.1:5432/test`).
- `pg_schema`: a fresh, migrated schema in it for one test, dropped afterwards; yields
  its name. Stores open on it with `schema=`.
- `redis_url`: a reachable Redis (`KEYTURN_TEST_REDIS`, default
  `redis://127.0.0.1:6379/0`).
- `store_url`: parametrised over `memory`, `sqlite` and `postgres`: a migrated, empty
  database for one test, as `(url, schema)`.

When a service cannot be reached, its tests are skipped with a message saying how to
start it, except in CI (`CI` set and not "0"/"false"), where they fail: CI must prove
every store behaviour on the real thing.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest

from keyturn.storage import upgrade
from support.availability import missing
from support.databases import create_pg_schema, drop_pg_schema

PG_URL = os.environ.get("KEYTURN_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KEYTURN_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    if not _reachable(PG_URL, 5432):
        missing("PostgreSQL", PG_URL, "start it or set KEYTURN_TEST_PG")
    return PG_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _reachable(REDIS_URL, 6379):
        missing("Redis", REDIS_URL, "start it or set KEYTURN_TEST_REDIS")
    return REDIS_URL


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    name = create_pg_schema(postgres_url)
    yield name
    drop_pg_schema(postgres_url, name)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    yield from _database(request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def durable_store_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, str | None]]:
    """Like `store_url`, for what only a database that outlives the process can show."""
    yield from _database(request, tmp_path)


def _database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "memory":
        yield "memory:", None
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keyturn.db'}"
        upgrade(url)
        yield url, None
    else:
        pg = request.getfixturevalue("postgres_url")
        name = create_pg_schema(pg)
        yield pg, name
        drop_pg_schema(pg, name)


@pytest.fixture
async def own_role(postgres_url: str, pg_schema: str) -> AsyncIterator[tuple[str, str]]:
    """A login role of this test's own, with rights on `pg_schema`: `(url, role)`. Its
    backends are told apart from every other test's by `usename`, so a test may kill
    them without touching anyone else's."""
    role = f"kt_{secrets.token_hex(6)}"
    parsed = urlparse(postgres_url)
    password = parsed.password
    conn = await asyncpg.connect(postgres_url, timeout=5)
    try:
        login = f"LOGIN PASSWORD '{password}'" if password else "LOGIN"
        await conn.execute(f"CREATE ROLE {role} {login}")
        await conn.execute(f"GRANT USAGE ON SCHEMA {pg_schema} TO {role}")
        await conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {pg_schema} TO {role}"
        )
        await conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {pg_schema} TO {role}")
    finally:
        await conn.close()
    credentials = f"{role}:{password}" if password else role
    netloc = f"{credentials}@{parsed.hostname}:{parsed.port or 5432}"
    yield parsed._replace(netloc=netloc).geturl(), role
    conn = await asyncpg.connect(postgres_url, timeout=5)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
    finally:
        await conn.close()
