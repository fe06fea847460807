"""Sessions opened as an application opens them: users added through keyturn's admin
service (what `keyturn users add` runs), then one `POST /auth/login` per session on the
running server, each answered with the session's first refresh token.

Used by `bench/run` and `bench.fresh`, so that what they measure starts from the
database a deployment has after its users logged in: rows written by keyturn's own
statements, its audit events with them, and nothing run by hand.
"""

from __future__ import annotations

import asyncio

import httpx

from keyturn.core.models import ClientType, Delivery, GrantType
from keyturn.service.engine import Engine
from keyturn.settings import Settings
from keyturn.wiring import open_engine

CLIENT = "bench"
PASSWORD = "a long bench passphrase"
SCOPE = frozenset({"read", "write"})
SESSIONS_PER_USER = 10
LOGIN_CONCURRENCY = 8


async def register(settings: Settings, sessions: int) -> list[str]:
    """The public first-party client `bench` and one user per `SESSIONS_PER_USER`
    sessions, through the admin service; their usernames."""
    engine = await open_engine(settings, schema=settings.db_schema)
    try:
        await add_client(engine)
        names = [f"user-{j}" for j in range(max(1, -(-sessions // SESSIONS_PER_USER)))]
        for name in names:
            await engine.admin.add_user(name, PASSWORD)
        return names
    finally:
        await engine.close()


async def add_client(engine: Engine) -> None:
    """The benchmarks' client: public, first-party (password and refresh-token
    grants), its refresh token in the response body."""
    await engine.admin.add_client(
        CLIENT,
        ClientType.PUBLIC,
        grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
        scope=SCOPE,
        delivery=Delivery.BODY,
    )


async def log_in(base: str, users: list[str], sessions: int) -> list[str]:
    """The first refresh token of each of `sessions` logins at `base`, spread over
    `users`, in the order they were opened."""
    tokens: list[str] = []
    pending = iter(range(sessions))
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:

        async def worker() -> None:
            for i in pending:
                answer = await http.post(
                    "/auth/login",
                    json={
                        "username": users[i % len(users)],
                        "password": PASSWORD,
                        "client_id": CLIENT,
                        "device_name": f"device {i}",
                    },
                    headers={"User-Agent": "bench.load.logins"},
                )
                answer.raise_for_status()
                tokens.append(answer.json()["refresh_token"])

        await asyncio.gather(*(worker() for _ in range(LOGIN_CONCURRENCY)))
    return tokens
