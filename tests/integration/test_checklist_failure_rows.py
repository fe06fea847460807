"""Store and Redis failures under a real server, over HTTP (FS-08, FS-10, FS-11, RL-06):
a COMMIT that PostgreSQL itself refuses, PostgreSQL cut away and back, Redis stopped.

What fails is real: a deferred constraint trigger of the test's own schema that fails
the commit of the next write to `sessions` (a serialization failure, or its backend
terminated); a proxy in front of PostgreSQL that the test cuts; a redis-server of the
test's own that it stops. The shared PostgreSQL and Redis are never stopped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from bench.faults.services import PrivateRedis

from keyturn.core.models import ClientType, Delivery, GrantType
from keyturn.storage import upgrade
from keyturn.verify.revocations import RevocationFeed
from support.availability import missing
from support.engine import PASSWORD, SECRET, engine_with
from support.lossy_proxy import LossyProxy
from support.server import running_server, server_process

SCOPE = frozenset({"read", "write"})


async def _seed(url: str, schema: str | None) -> dict[str, str]:
    """alice; `native` and `probe` (public, body delivery), `conf` (confidential) and
    `rs` (may introspect and read the feed). Returns the client secrets."""
    engine = await engine_with(url, schema=schema)
    try:
        await engine.admin.add_user("alice", PASSWORD)
        for name in ("native", "probe"):
            await engine.admin.add_client(
                name,
                ClientType.PUBLIC,
                grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
                scope=SCOPE,
                delivery=Delivery.BODY,
            )
        conf = await engine.admin.add_client(
            "conf",
            ClientType.CONFIDENTIAL,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=SCOPE,
        )
        rs = await engine.admin.add_client(
            "rs",
            ClientType.CONFIDENTIAL,
            grant_types={GrantType.CLIENT_CREDENTIALS},
            can_introspect=True,
        )
        return {"conf": conf.secret or "", "rs": rs.secret or ""}
    finally:
        await engine.close()


def server_env(url: str, schema: str | None, **extra: str) -> dict[str, str]:
    env = {
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_DATABASE_URL": url,
        "KEYTURN_GRACE_SECONDS": "10",
        **extra,
    }
    if schema:
        env["KEYTURN_DB_SCHEMA"] = schema
    return env


def login(base: str, client_id: str = "native", secret: str | None = None) -> dict[str, Any]:
    body = {"username": "alice", "password": PASSWORD, "client_id": client_id}
    if secret:
        body["client_secret"] = secret
    answer = httpx.post(f"{base}/auth/login", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return tokens


def rotate(base: str, refresh_token: str) -> httpx.Response:
    return httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "native"},
        timeout=30,
    )


def sid_of(access_token: str) -> str:
    payload = access_token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "temporarily_unavailable"
    assert int(answer.headers["retry-after"]) > 0
    assert answer.headers["cache-control"] == "no-store"
    for leak in ("kt_rt_", "access_token", "eyJ", "Traceback"):
        assert leak not in answer.text


# FS-08: a COMMIT that fails


@dataclass(frozen=True)
class PgServer:
    base: str
    url: str
    schema: str

    async def _run(self, statement: str, *args: Any, script: bool = False) -> list[Any]:
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            await conn.execute(f"SET search_path TO {self.schema}")
            if script:
                await conn.execute(statement)
                return []
            return list(await conn.fetch(statement, *args))
        finally:
            await conn.close()

    def execute(self, script: str) -> None:
        """Run statements (several, separated by semicolons) in the server's schema."""
        asyncio.run(self._run(script, script=True))

    def row(self, statement: str, *args: Any) -> tuple[Any, ...]:
        """The one row of `statement`."""
        [found] = asyncio.run(self._run(statement, *args))
        return tuple(found)


@pytest.fixture
def pg_server(postgres_url: str, pg_schema: str) -> Iterator[PgServer]:
    asyncio.run(_seed(postgres_url, pg_schema))
    with running_server(server_env(postgres_url, pg_schema, KEYTURN_DB_TIMEOUT="2")) as base:
        yield PgServer(base, postgres_url, pg_schema)


# What the trigger does at COMMIT, the first time it fires.
COMMIT_FAILURES = {
    "serialization_failure": (
        "RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'serialization_failure';"
    ),
    # The serving connection ends at COMMIT: what the client sees is a lost
    # connection, and it cannot know whether the write committed (it did not).
    "backend_terminated": ("PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(10);"),
}


def fail_next_commit(server: PgServer, failure: str) -> None:
    """The next transaction that writes a row of `sessions` fails at COMMIT, once: a
    deferred constraint trigger runs at commit, after every statement succeeded, and a
    sequence (never rolled back) counts its firings."""
    server.execute(
        f"""
        CREATE SEQUENCE fs08_firings;
        CREATE FUNCTION fs08_fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('{server.schema}.fs08_firings') = 1 THEN
                {COMMIT_FAILURES[failure]}
            END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER fs08_fail_commit AFTER INSERT OR UPDATE ON sessions
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            EXECUTE FUNCTION {server.schema}.fs08_fail_commit();
        """
    )


def firings(server: PgServer) -> int:
    # A sequence never used reads last_value 1 with is_called false.
    (fired,) = server.row("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM fs08_firings")
    return int(fired)


def session_state(server: PgServer, sid: str) -> tuple[Any, ...]:
    return server.row("SELECT generation, revoked_at FROM sessions WHERE id = $1", sid)


@pytest.mark.parametrize("failure", list(COMMIT_FAILURES))
def test_fs08_a_rotation_whose_commit_fails_answers_503_and_the_token_still_rotates(
    pg_server: PgServer, failure: str
) -> None:
    tokens = login(pg_server.base)
    sid = sid_of(tokens["access_token"])
    generation, _ = session_state(pg_server, sid)
    fail_next_commit(pg_server, failure)

    failed = rotate(pg_server.base, tokens["refresh_token"])
    assert_unavailable(failed)
    assert firings(pg_server) >= 1  # the COMMIT was reached, and refused
    # Consistent: the generation the client holds a token for, and no session ended.
    assert session_state(pg_server, sid) == (generation, None)

    again = rotate(pg_server.base, tokens["refresh_token"])
    assert again.status_code == 200, again.text
    nxt = again.json()["refresh_token"]
    assert rotate(pg_server.base, nxt).status_code == 200
    assert session_state(pg_server, sid) == (generation + 2, None)


@pytest.mark.parametrize("failure", list(COMMIT_FAILURES))
def test_fs08_a_login_whose_commit_fails_answers_503_and_leaves_no_session(
    pg_server: PgServer, failure: str
) -> None:
    fail_next_commit(pg_server, failure)
    failed = httpx.post(
        f"{pg_server.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "client_id": "native"},
        timeout=30,
    )
    assert_unavailable(failed)
    assert firings(pg_server) >= 1
    assert pg_server.row("SELECT count(*) FROM sessions") == (0,)
    tokens = login(pg_server.base)
    assert rotate(pg_server.base, tokens["refresh_token"]).status_code == 200


# FS-10: health and readiness through an outage


def test_fs10_healthz_stays_200_readyz_follows_the_store_and_the_first_request_after_works(
    postgres_url: str, pg_schema: str
) -> None:
    asyncio.run(_seed(postgres_url, pg_schema))
    parts = urlsplit(postgres_url)
    with LossyProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        proxied = parts._replace(netloc=f"{parts.netloc.split('@')[0]}@127.0.0.1:{proxy.port}")
        env = server_env(proxied.geturl(), pg_schema, KEYTURN_DB_TIMEOUT="1")
        with server_process(env) as (base, process):
            pid = process.pid
            tokens = login(base)
            assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200

            proxy.cut()
            try:
                outage_ends = time.monotonic() + 3
                rounds = 0
                while time.monotonic() < outage_ends:
                    started = time.monotonic()
                    health = httpx.get(f"{base}/healthz", timeout=10)
                    assert health.status_code == 200, health.text
                    assert time.monotonic() - started < 1  # never waits on the store
                    assert_unavailable(httpx.get(f"{base}/readyz", timeout=10))
                    rounds += 1
                assert_unavailable(rotate(base, tokens["refresh_token"]))
                assert rounds >= 2
            finally:
                proxy.restore()

            # The first request once the database is back is a real one, and it works:
            # the pool reconnects, no restart.
            back = rotate(base, tokens["refresh_token"])
            assert back.status_code == 200, back.text
            ready = httpx.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready"}
            assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
            assert process.poll() is None
            assert process.pid == pid


# FS-11 and RL-06: Redis stops under a running server


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keyturn.db'}"
        upgrade(url)
        return url, None
    return request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema")


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        missing("redis-server", "PATH", "install redis-server")
    redis = PrivateRedis()
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


PROBE_LIMIT = 5


def probe_limit(base: str) -> list[int]:
    """Requests naming the public client `probe` from one address, one past its limit."""
    return [
        httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": "kt_rt_x", "client_id": "probe"},
            timeout=30,
        ).status_code
        for _ in range(PROBE_LIMIT + 1)
    ]


def test_fs11_rl06_with_redis_stopped_tokens_rotate_limits_count_per_process_and_the_feed_works(
    database: tuple[str, str | None], private_redis: PrivateRedis, tmp_path: Path
) -> None:
    url, schema = database
    secrets = asyncio.run(_seed(url, schema))
    env = server_env(
        url,
        schema,
        KEYTURN_REDIS_URL=private_redis.url,
        KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE=str(PROBE_LIMIT),
    )
    log = tmp_path / "server.log"
    with running_server(env, log_path=log) as base:
        first = login(base)
        # While Redis answers, the count is Redis's.
        assert probe_limit(base) == [400] * PROBE_LIMIT + [429]
        assert private_redis.command("--scan", "--pattern", "keyturn:rl:*").split()
        feed = RevocationFeed(base, "rs", secrets["rs"], interval=0.5, redis_url=private_redis.url)
        feed.start()
        try:
            private_redis.stop()

            # Issuance and rotation go on: PostgreSQL (or SQLite) is the source of truth.
            tokens = login(base)
            rotated = rotate(base, tokens["refresh_token"])
            assert rotated.status_code == 200, rotated.text
            first_party = httpx.post(
                f"{base}/auth/refresh",
                json={"client_id": "native", "refresh_token": rotated.json()["refresh_token"]},
                timeout=30,
            )
            assert first_party.status_code == 200, first_party.text
            conf = login(base, "conf", secrets["conf"])
            conf_rotated = httpx.post(
                f"{base}/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": conf["refresh_token"]},
                auth=("conf", secrets["conf"]),
                timeout=30,
            )
            assert conf_rotated.status_code == 200, conf_rotated.text
            introspected = httpx.post(
                f"{base}/oauth/introspect",
                data={"token": tokens["access_token"]},
                auth=("rs", secrets["rs"]),
                timeout=30,
            )
            assert introspected.status_code == 200
            assert introspected.json()["active"] is True
            assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200

            # A logout is committed, and reaches resource servers through the HTTP feed
            # (its announcement on Redis cannot be made).
            sid = sid_of(first["access_token"])
            assert not feed.revoked(sid)
            logout = httpx.post(
                f"{base}/auth/logout",
                json={"client_id": "native", "refresh_token": first["refresh_token"]},
                timeout=30,
            )
            assert logout.status_code == 204
            page = httpx.get(f"{base}/auth/revocations", auth=("rs", secrets["rs"]), timeout=30)
            assert page.status_code == 200, page.text
            assert sid in {item["sid"] for item in page.json()["revocations"]}
            deadline = time.monotonic() + 5  # 10 polling intervals
            while not feed.revoked(sid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert feed.revoked(sid)
            assert feed.announcements == 0  # learnt by polling, not from Redis

            # The limits degrade to this process's count: still enforced.
            assert probe_limit(base) == [400] * PROBE_LIMIT + [429]
        finally:
            feed.stop()
    records = [json.loads(line) for line in log.read_text().splitlines() if line]
    statuses = [r["status"] for r in records if r["logger"] == "keyturn.access"]
    assert statuses
    assert all(status < 500 for status in statuses), statuses
    messages = [r["message"] for r in records]
    assert sum("redis unavailable for rate limits" in m for m in messages) == 1
    assert any("could not announce 1 revocations on redis" in m for m in messages)
