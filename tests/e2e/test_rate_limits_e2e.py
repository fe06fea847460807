"""Rate limits over HTTP (RL rows): per account on login, per public client and
address on the token endpoint, shared between worker processes through Redis."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import httpx
import pytest

from conftest import Server
from keyturn.core.models import ClientType, GrantType
from keyturn.storage import upgrade
from keyturn.wiring import open_engine
from support.engine import PASSWORD, engine_with
from support.server import running_server

SECRET = "limits-master-secret-7GwVMWOC9KolMTP1-0eOcZTujOhM9LUc"


async def _add_user(server: Server, name: str) -> None:
    engine = await open_engine(server.settings)
    try:
        await engine.admin.add_user(name, PASSWORD)
    finally:
        await engine.close()


def test_rl01_failed_logins_lock_the_account_not_the_address(server: Server) -> None:
    victim = f"victim-{secrets.token_hex(3)}"
    asyncio.run(_add_user(server, victim))
    for i in range(5):
        response = httpx.post(
            f"{server.base}/auth/login",
            json={"username": victim, "password": "wrong guess", "client_id": "native"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
        )
        assert response.status_code == 401
    locked = httpx.post(
        f"{server.base}/auth/login",
        json={"username": victim, "password": PASSWORD, "client_id": "native"},
    )
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert locked.json()["error"] == "rate_limited"
    other = httpx.post(
        f"{server.base}/auth/login",
        json={"username": "bob", "password": PASSWORD, "client_id": "native"},
    )
    assert other.status_code == 200


async def _seed(url: str, client_id: str) -> str:
    engine = await engine_with(url, secret_key=SECRET)
    try:
        await engine.admin.add_user("alice", PASSWORD)
        await engine.admin.add_client(
            client_id, ClientType.PUBLIC, grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN}
        )
        client = await engine.admin.get_client(client_id)
        return (await engine.login.login("alice", PASSWORD, client)).refresh_token or ""
    finally:
        await engine.close()


@pytest.fixture
def limited_db(tmp_path: Path) -> tuple[str, str, str]:
    url = f"sqlite:///{tmp_path / 'limits.db'}"
    upgrade(url)
    client_id = f"app-{secrets.token_hex(4)}"
    token = asyncio.run(_seed(url, client_id))
    return url, client_id, token


def test_rl02_a_limited_refresh_is_429_and_rotates_nothing(
    limited_db: tuple[str, str, str],
) -> None:
    url, client_id, token = limited_db
    env = {
        "KEYTURN_DATABASE_URL": url,
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": "3",
    }
    with running_server(env) as base:
        garbage = {
            "grant_type": "refresh_token",
            "refresh_token": "kt_rt_x",
            "client_id": client_id,
        }
        for _ in range(3):
            assert httpx.post(f"{base}/oauth/token", data=garbage).status_code == 400
        limited = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
        )
        assert limited.status_code == 429
        assert "retry-after" in limited.headers
        assert limited.headers["cache-control"] == "no-store"
    with running_server({**env, "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": "100"}) as base:
        # A fresh process, fresh counts: the token the limit refused is still live.
        ok = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
        )
        assert ok.status_code == 200


def test_rl04_two_workers_share_the_limit_through_redis(
    limited_db: tuple[str, str, str], redis_url: str
) -> None:
    url, client_id, _ = limited_db
    env = {
        "KEYTURN_DATABASE_URL": url,
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": "4",
        "KEYTURN_REDIS_URL": redis_url,
    }
    with running_server(env, workers=2) as base:
        statuses = []
        for _ in range(5):
            # A new connection each time, so the requests spread over both workers.
            with httpx.Client() as client:
                response = client.post(
                    f"{base}/oauth/token",
                    data={
                        "grant_type": "refresh_token",
                        "refresh_token": "kt_rt_x",
                        "client_id": client_id,
                    },
                )
                statuses.append(response.status_code)
        assert statuses[:4] == [400] * 4
        assert statuses[4] == 429
