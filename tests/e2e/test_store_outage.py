"""A started server whose PostgreSQL goes away mid-flight (through a proxy the test
cuts): every endpoint answers 503 with `Retry-After`, never a token, never a revocation
it did not store, never `active: true`; and when the database is back, nothing was lost
(RV-08, IN-06; FS rows over HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import SECRET, _seed
from keyturn.settings import Settings
from support.databases import create_pg_schema, drop_pg_schema
from support.engine import PASSWORD
from support.lossy_proxy import LossyProxy
from support.server import running_server


@dataclass(frozen=True)
class Outage:
    base: str
    proxy: LossyProxy
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def outage(postgres_url: str) -> Iterator[Outage]:
    schema = create_pg_schema(postgres_url)
    settings = Settings(database_url=postgres_url, secret_key=SECRET, db_schema=schema)
    secrets = asyncio.run(_seed(settings))
    parts = urlsplit(postgres_url)
    with LossyProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        proxied = parts._replace(netloc=f"{parts.netloc.split('@')[0]}@127.0.0.1:{proxy.port}")
        env = {
            "KEYTURN_SECRET_KEY": SECRET,
            "KEYTURN_DATABASE_URL": proxied.geturl(),
            "KEYTURN_DB_SCHEMA": schema,
            "KEYTURN_DB_TIMEOUT": "1",
        }
        with running_server(env) as base:
            yield Outage(base, proxy, secrets)
    drop_pg_schema(postgres_url, schema)


def login(outage: Outage) -> dict[str, Any]:
    answer = httpx.post(
        f"{outage.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "client_id": "native"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["retry-after"]) > 0
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"] == "temporarily_unavailable"
    assert "access_token" not in answer.text
    assert "Traceback" not in answer.text


def during_outage(outage: Outage, calls: dict[str, Any]) -> dict[str, httpx.Response]:
    outage.proxy.cut()
    try:
        return {name: call() for name, call in calls.items()}
    finally:
        outage.proxy.restore()


def test_rv08_revoke_and_logout_without_a_store_are_503_and_the_token_lives_on(
    outage: Outage,
) -> None:
    tokens = login(outage)
    rt = tokens["refresh_token"]
    answers = during_outage(
        outage,
        {
            "revoke": lambda: httpx.post(
                f"{outage.base}/oauth/revoke",
                data={"token": rt, "client_id": "native"},
                timeout=30,
            ),
            "logout": lambda: httpx.post(
                f"{outage.base}/auth/logout",
                json={"client_id": "native", "refresh_token": rt},
                timeout=30,
            ),
        },
    )
    for answer in answers.values():
        assert_unavailable(answer)
    # RFC 7009 §2.2.1: after a 503 the client must assume the token still exists; it does.
    again = httpx.post(
        f"{outage.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": rt, "client_id": "native"},
        timeout=30,
    )
    assert again.status_code == 200, again.text


def test_in06_introspection_without_a_store_fails_closed(outage: Outage) -> None:
    tokens = login(outage)
    answers = during_outage(
        outage,
        {
            token_kind: lambda token=token: httpx.post(
                f"{outage.base}/oauth/introspect",
                data={"token": token},
                auth=("rs", outage.secrets["rs"]),
                timeout=30,
            )
            for token_kind, token in (
                ("refresh", tokens["refresh_token"]),
                ("access", tokens["access_token"]),
            )
        },
    )
    for answer in answers.values():
        assert_unavailable(answer)
        assert '"active":true' not in answer.text.replace(" ", "")


def test_no_token_is_issued_without_a_store(outage: Outage) -> None:
    tokens = login(outage)
    answers = during_outage(
        outage,
        {
            "login": lambda: httpx.post(
                f"{outage.base}/auth/login",
                json={"username": "alice", "password": PASSWORD, "client_id": "native"},
                timeout=30,
            ),
            "refresh": lambda: httpx.post(
                f"{outage.base}/oauth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": tokens["refresh_token"],
                    "client_id": "native",
                },
                timeout=30,
            ),
            "client_credentials": lambda: httpx.post(
                f"{outage.base}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("cc", outage.secrets["cc"]),
                timeout=30,
            ),
            "readyz": lambda: httpx.get(f"{outage.base}/readyz", timeout=30),
        },
    )
    for answer in answers.values():
        assert_unavailable(answer)
    # Back: the refresh token that could not rotate still rotates, once.
    back = httpx.post(
        f"{outage.base}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "native",
        },
        timeout=30,
    )
    assert back.status_code == 200, back.text
