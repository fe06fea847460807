"""Checklist rows about abuse and client life cycle, over real HTTP: brute force on a
client secret and token probing are throttled and audited (RL-05), a disabled client
cannot go on rotating (CA-09), oversized input is refused early (IV-04)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from conftest import SECRET, Server, _seed
from keyturn.core.models import ClientType, GrantType
from keyturn.service.client_auth import AUDITED_WRONG_SECRETS
from keyturn.settings import Settings
from keyturn.storage import upgrade
from keyturn.wiring import open_engine
from support.engine import PASSWORD
from support.server import running_server

LIMIT = 40


@dataclass(frozen=True)
class Limited:
    base: str
    settings: Settings
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    url = f"sqlite:///{tmp_path_factory.mktemp('rl05') / 'keyturn.db'}"
    upgrade(url)
    settings = Settings(database_url=url, secret_key=SECRET)
    made = asyncio.run(_seed(settings))
    env = {
        "KEYTURN_DATABASE_URL": url,
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_TOKEN_REQUESTS_PER_MINUTE": str(LIMIT),
        "KEYTURN_CLIENT_AUTH_FAILURES_PER_MINUTE": str(LIMIT),
    }
    with running_server(env) as base:
        yield Limited(base, settings, made)


async def audited(settings: Settings, kind: str) -> int:
    engine = await open_engine(settings)
    try:
        return len(await engine.store.list_events(type=kind))
    finally:
        await engine.close()


def test_rl05_guessing_a_secret_is_throttled_and_audited(limited: Limited) -> None:
    with httpx.Client(base_url=limited.base) as http:
        statuses = [
            http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=("conf", f"g{n}")
            ).status_code
            for n in range(100)
        ]
    assert statuses[:LIMIT] == [401] * LIMIT
    assert set(statuses[LIMIT:]) == {429}
    # The first guesses of the minute are on record (H-11: the rest would add rows, not
    # news); the throttled ones cost nothing, not even a secret check.
    recorded = asyncio.run(audited(limited.settings, "client_authentication_failed"))
    assert recorded == AUDITED_WRONG_SECRETS
    # The right secret is refused too until the window ends: no guessing around it.
    right = httpx.post(
        f"{limited.base}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("conf", limited.secrets["conf"]),
    )
    assert right.status_code == 429


def test_rl05_probing_random_tokens_is_throttled(limited: Limited) -> None:
    seen = {200: 0, 429: 0}
    with httpx.Client(base_url=limited.base, auth=("rs", limited.secrets["rs"])) as http:
        for endpoint in ("introspect", "revoke"):
            for _ in range(500):
                token = "kt_rt_" + secrets.token_urlsafe(40)
                answer = http.post(f"/oauth/{endpoint}", data={"token": token})
                seen[answer.status_code] += 1
                if answer.status_code == 429:
                    assert int(answer.headers["retry-after"]) > 0
    assert seen[200] == LIMIT, "one window's worth of probes, then throttled"
    assert seen[429] == 1000 - LIMIT


def test_ca09_a_disabled_client_cannot_rotate_its_live_tokens(server: Server) -> None:
    name = f"doomed-{secrets.token_hex(3)}"

    async def setup() -> str:
        engine = await open_engine(
            Settings(**{**server.settings.model_dump(), "issuer": server.base})
        )
        try:
            await engine.admin.add_client(
                name, ClientType.PUBLIC, grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN}
            )
            client = await engine.admin.get_client(name)
            return (await engine.login.login("alice", PASSWORD, client)).refresh_token or ""
        finally:
            await engine.close()

    token = asyncio.run(setup())
    disabled = _cli(server, "clients", "disable", name)
    assert disabled.returncode == 0, disabled.stderr
    answer = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": name},
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


def _cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KEYTURN_DATABASE_URL": server.settings.database_url,
        "KEYTURN_SECRET_KEY": SECRET,
    }
    if server.settings.db_schema:
        env["KEYTURN_DB_SCHEMA"] = server.settings.db_schema
    return subprocess.run(
        [sys.executable, "-m", "keyturn", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("path", "make"),
    [
        (
            "/auth/login",
            lambda: {"json": {"username": "u" * 100_000, "password": "x", "client_id": "native"}},
        ),
        (
            "/oauth/token",
            lambda: {"data": {"grant_type": "client_credentials", "client_id": "c" * 65_536}},
        ),
        ("/oauth/authorize", lambda: {"data": {"client_id": "c" * 65_536}}),
    ],
    ids=["100KB-username", "64KB-client_id", "64KB-authorize-form"],
)
def test_iv04_oversized_bodies_are_413_before_any_work(
    server: Server, path: str, make: object
) -> None:
    assert callable(make)
    started = time.monotonic()
    answer = httpx.post(f"{server.base}{path}", **make())
    assert answer.status_code == 413
    assert "Traceback" not in answer.text
    assert time.monotonic() - started < 10


def test_iv04_a_huge_cookie_header_is_refused_not_a_crash(server: Server) -> None:
    try:
        answer = httpx.post(
            f"{server.base}/auth/refresh",
            json={"client_id": "spa"},
            headers={"Cookie": "__Host-keyturn_rt_spa=" + "x" * 1_000_000, "X-Keyturn-CSRF": "1"},
        )
    except httpx.RemoteProtocolError:
        return  # the server closed the connection on a header block it will not read
    assert answer.status_code in (400, 413, 431)
    assert httpx.get(f"{server.base}/healthz").status_code == 200


def test_iv04_huge_query_strings_are_refused(server: Server) -> None:
    answer = httpx.get(f"{server.base}/oauth/authorize?client_id=" + "c" * 60_000)
    assert answer.status_code in (400, 414, 431)
    assert httpx.get(f"{server.base}/healthz").status_code == 200
