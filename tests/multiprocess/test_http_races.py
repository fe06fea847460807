"""Rotation races over HTTP against a multi-worker server: 16 clients present one
refresh token at once, many trials (FS-01, FS-02 through the whole stack)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyturn.core.models import ClientType, GrantType
from keyturn.storage import upgrade
from support.authorize import new_pkce, query_of, sign_in
from support.databases import create_pg_schema, drop_pg_schema
from support.engine import PASSWORD, engine_with, seed
from support.server import running_server

SECRET = "race-master-secret-2AifJCte4tA-3Ursq7HIVUkAAHF3Iekz"
PRESENTERS = 16
TRIALS = 15

pytestmark = pytest.mark.slow


REDIRECT = "https://app.test/callback"


async def _seed(url: str, schema: str | None) -> None:
    engine = await engine_with(url, schema=schema, secret_key=SECRET)
    try:
        await seed(engine)
        await engine.admin.add_client(
            "app",
            ClientType.PUBLIC,
            grant_types={GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN},
            scope=frozenset({"read"}),
            redirect_uris=[REDIRECT],
        )
    finally:
        await engine.close()


@pytest.fixture(
    params=[("postgres", 4), ("sqlite", 2)], ids=["postgres-4-workers", "sqlite-2-workers"]
)
def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[dict[str, str], int]]:
    kind, workers = request.param
    env = {"KEYTURN_SECRET_KEY": SECRET}
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'race.db'}"
        upgrade(url)
        asyncio.run(_seed(url, None))
        env["KEYTURN_DATABASE_URL"] = url
        yield env, workers
        return
    url = request.getfixturevalue("postgres_url")
    schema = create_pg_schema(url)
    asyncio.run(_seed(url, schema))
    env |= {"KEYTURN_DATABASE_URL": url, "KEYTURN_DB_SCHEMA": schema}
    yield env, workers
    drop_pg_schema(url, schema)


async def _present_at_once(base: str, token: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": "native"}
        return list(
            await asyncio.gather(
                *(client.post("/oauth/token", data=data) for _ in range(PRESENTERS))
            )
        )


async def _login(base: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.post(
            "/auth/login", json={"username": "alice", "password": PASSWORD, "client_id": "native"}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["refresh_token"]
        return token


def test_fs01_over_http_every_presenter_gets_the_one_successor(
    database: tuple[dict[str, str], int],
) -> None:
    env, workers = database
    with running_server({**env, "KEYTURN_GRACE_SECONDS": "10"}, workers=workers) as base:
        token = asyncio.run(_login(base))
        for trial in range(TRIALS):
            responses = asyncio.run(_present_at_once(base, token))
            assert {r.status_code for r in responses} == {200}, (trial, [r.text for r in responses])
            successors = {r.json()["refresh_token"] for r in responses}
            assert len(successors) == 1, f"trial {trial} forked into {len(successors)}"
            token = successors.pop()
        # Exactly one generation per trial: the next token is live, its parent in grace.
        final = asyncio.run(_present_at_once(base, token))
        assert {r.status_code for r in final} == {200}


def test_fs02_over_http_with_grace_zero_one_presenter_wins_and_the_session_ends(
    database: tuple[dict[str, str], int],
) -> None:
    env, workers = database
    with running_server({**env, "KEYTURN_GRACE_SECONDS": "0"}, workers=workers) as base:
        for trial in range(TRIALS):
            token = asyncio.run(_login(base))
            responses = asyncio.run(_present_at_once(base, token))
            statuses = sorted(r.status_code for r in responses)
            assert statuses.count(200) == 1, (trial, statuses)
            assert set(statuses) <= {200, 400}
            winner = next(r for r in responses if r.status_code == 200).json()["refresh_token"]
            after = asyncio.run(_present_at_once(base, winner))
            assert {r.status_code for r in after} == {400}, "the session must have ended"


async def _exchange_at_once(base: str, code: str, verifier: str) -> list[httpx.Response]:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
        "client_id": "app",
    }
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return list(
            await asyncio.gather(
                *(client.post("/oauth/token", data=data) for _ in range(PRESENTERS))
            )
        )


def test_gt08_over_http_a_code_presented_at_once_is_redeemed_once_and_then_ended(
    database: tuple[dict[str, str], int],
) -> None:
    """16 presentations of one code across the workers: exactly one gets tokens, and as
    every other one is a second use, the session those tokens belong to is ended."""
    env, workers = database
    with running_server(env, workers=workers) as base, httpx.Client(timeout=30) as browser:
        for trial in range(TRIALS):
            pkce = new_pkce()
            url = (
                f"{base}/oauth/authorize?response_type=code&client_id=app&redirect_uri={REDIRECT}"
                f"&code_challenge={pkce.challenge}&code_challenge_method=S256"
            )
            answer = sign_in(browser, url, "alice", PASSWORD)
            code = query_of(answer.headers["location"])["code"]
            responses = asyncio.run(_exchange_at_once(base, code, pkce.verifier))
            statuses = sorted(r.status_code for r in responses)
            assert statuses.count(200) == 1, (trial, statuses)
            assert {r.json()["error"] for r in responses if r.status_code != 200} == {
                "invalid_grant"
            }
            winner = next(r for r in responses if r.status_code == 200).json()
            after = httpx.post(
                f"{base}/oauth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": winner["refresh_token"],
                    "client_id": "app",
                },
            )
            assert after.status_code == 400, (trial, "the code's session must have ended")
