"""One clock (H-18, H-19): real `keyturn` processes whose wall clocks lie, by libfaketime.

Every rule of a rotation compares times: the retry window, the idle and absolute
deadlines, "the password changed after this session authenticated". Hosts whose clocks
differ by seconds must still agree on every one of them (H-18), and a clock stepped back
or forward an hour must neither open a window that has closed nor close one that is
open (H-19). The clocks here are skewed or stepped with Debian's libfaketime
(`apt-get install faketime`), preloaded into the server processes only: the test process
and the database keep the true time.

Without libfaketime these tests are skipped with a message saying how to get it, except
in CI, where they fail.
"""

from __future__ import annotations

import asyncio
import glob
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keyturn.storage import upgrade
from support.availability import missing
from support.databases import create_pg_schema, drop_pg_schema
from support.engine import PASSWORD, SECRET, engine_with, seed
from support.server import running_server

pytestmark = pytest.mark.slow

WINDOW = 2
"""The retry window (seconds) of the servers here: shorter than the skew between hosts."""
SKEW = "+3s"
"""How far the fast host's clock runs ahead of the slow one's (the database's is true)."""
HOUR = 3600


def _libfaketime() -> str | None:
    try:
        listed = subprocess.run(
            ["dpkg", "-L", "libfaketime"], capture_output=True, text=True, check=False
        ).stdout.split()
    except OSError:
        listed = []
    candidates = [p for p in listed if p.endswith("/libfaketime.so.1")]
    candidates += glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    candidates += glob.glob("/usr/local/lib/faketime/libfaketime.so.1")
    return next((p for p in candidates if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def libfaketime() -> str:
    found = _libfaketime()
    if found is None:
        missing("libfaketime", "/usr/lib/*/faketime", "apt-get install faketime")
    return found


def skewed(lib: str, offset: str) -> dict[str, str]:
    """The environment of a process whose wall clock is off by `offset` ("+3s", "-3600")."""
    return {"LD_PRELOAD": lib, "FAKETIME": offset}


@dataclass
class SteppedClock:
    """A process's clock that the test steps while the process runs."""

    lib: str
    file: Path

    def env(self) -> dict[str, str]:
        self.file.write_text("+0\n")
        # Re-read at every call, so the step is seen at once.
        return {"LD_PRELOAD": self.lib, "FAKETIME_TIMESTAMP_FILE": str(self.file)} | {
            "FAKETIME_NO_CACHE": "1"
        }

    def step(self, seconds: int) -> None:
        self.file.write_text(f"{seconds:+d}\n")


async def _seed(url: str, schema: str | None) -> None:
    engine = await engine_with(url, schema=schema, secret_key=SECRET)
    try:
        await seed(engine)
    finally:
        await engine.close()


def _database(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, str]]:
    env = {"KEYTURN_SECRET_KEY": SECRET, "KEYTURN_GRACE_SECONDS": str(WINDOW)}
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'clock.db'}"
        upgrade(url)
        asyncio.run(_seed(url, None))
        yield env | {"KEYTURN_DATABASE_URL": url}
        return
    pg = request.getfixturevalue("postgres_url")
    schema = create_pg_schema(pg)
    asyncio.run(_seed(pg, schema))
    yield env | {"KEYTURN_DATABASE_URL": pg, "KEYTURN_DB_SCHEMA": schema}
    drop_pg_schema(pg, schema)


@pytest.fixture
def postgres(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """A seeded PostgreSQL schema that several hosts share: the environment to reach it."""
    yield from _database("postgres", tmp_path, request)


@pytest.fixture(params=["sqlite", "postgres"])
def database(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    yield from _database(request.param, tmp_path, request)


def login(base: str, username: str = "alice") -> str:
    response = httpx.post(
        f"{base}/auth/login",
        json={"username": username, "password": PASSWORD, "client_id": "native"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["refresh_token"]
    return token


def refresh(base: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": "native"},
        timeout=30,
    )


def rotated(base: str, token: str) -> str:
    response = refresh(base, token)
    assert response.status_code == 200, response.text
    successor: str = response.json()["refresh_token"]
    return successor


def test_h18_user_created_fast_host_login_slow_host_refreshes(
    libfaketime: str, postgres: dict[str, str]
) -> None:
    """The user is created by `keyturn users add` on a host 3 s ahead, then signs in
    at once on a host 3 s behind it: the session began after the password was set, on
    the deployment's one clock, and its first refresh rotates."""
    with running_server(postgres) as slow:
        added = subprocess.run(
            [sys.executable, "-m", "keyturn", "users", "add", "bob", "--password-stdin"],
            input=PASSWORD + "\n",
            env={**os.environ, **postgres, **skewed(libfaketime, SKEW)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert added.returncode == 0, added.stderr
        token = login(slow, "bob")
        response = refresh(slow, token)
        assert response.status_code == 200, response.text
        assert refresh(slow, response.json()["refresh_token"]).status_code == 200


def test_h18_rotate_slow_host_replay_fast_host_within_window_is_replay(
    libfaketime: str, postgres: dict[str, str]
) -> None:
    """Two hosts 3 s apart, a retry window of 2 s. A token rotated on the slow host and
    presented again at once on the fast one is a replay inside the window (the same
    successor, the session live); presented again past the window, on either host, it
    is reuse. Both hosts judge by one clock, not by their own."""
    with (
        running_server(postgres) as slow,
        running_server({**postgres, **skewed(libfaketime, SKEW)}) as fast,
    ):
        parent = login(slow)
        child = rotated(slow, parent)
        again = refresh(fast, parent)
        assert again.status_code == 200, again.text
        assert again.json()["refresh_token"] == child
        grandchild = rotated(fast, child)

        # The other way round: rotated on the fast host, presented on the slow one
        # after the window has passed in real time. The slow host's own clock says
        # less than the window has passed; the one clock says more.
        time.sleep(WINDOW + 0.5)
        late = refresh(slow, child)
        assert late.status_code == 400, late.text
        assert late.json()["error"] == "invalid_grant"
        assert refresh(fast, grandchild).status_code == 400, "the reuse ended the session"


def test_h19_clock_stepped_back_an_hour_does_not_extend_window(
    libfaketime: str, database: dict[str, str], tmp_path: Path
) -> None:
    """The server's clock is stepped back an hour just after a rotation. Once the
    window has passed in real time, the rotated-out token is reuse, as it would be
    without the step: the step does not hold the window open for an hour."""
    clock = SteppedClock(libfaketime, tmp_path / "faketime")
    with running_server({**database, **clock.env()}) as base:
        parent = login(base)
        child = rotated(base, parent)
        clock.step(-HOUR)
        time.sleep(WINDOW + 0.5)
        late = refresh(base, parent)
        assert late.status_code == 400, late.text
        assert late.json()["error"] == "invalid_grant"
        assert refresh(base, child).status_code == 400, "the reuse ended the session"


def test_h19_clock_stepped_forward_an_hour_does_not_end_live_session(
    libfaketime: str, database: dict[str, str], tmp_path: Path
) -> None:
    """The server's clock is stepped forward an hour just after a rotation. A second
    tab presents the parent at once: inside the window in real time, so it is a
    replay answered with the live token, and the session goes on rotating."""
    clock = SteppedClock(libfaketime, tmp_path / "faketime")
    with running_server({**database, **clock.env()}) as base:
        parent = login(base)
        child = rotated(base, parent)
        clock.step(HOUR)
        again = refresh(base, parent)
        assert again.status_code == 200, again.text
        assert again.json()["refresh_token"] == child
        assert refresh(base, rotated(base, child)).status_code == 200


def test_h19_host_started_after_a_step_back_answers_the_parent_once(
    libfaketime: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On one host (SQLite), a process started after the clock was stepped back an hour
    reads every recent rotation as an hour ahead. The parent it is shown then is
    answered once, counted, and refused after that: a thief holding it gets no hour of
    live tokens, and the session is not ended for a step. (On PostgreSQL every process
    reads the database's clock, so no process reads before a rotation.)"""
    database = next(_database("sqlite", tmp_path, request))
    with running_server(database) as before:
        parent = login(before)
        child = rotated(before, parent)
    with running_server({**database, **skewed(libfaketime, f"-{HOUR}")}) as after:
        answered = refresh(after, parent)
        assert answered.status_code == 200, answered.text
        assert answered.json()["refresh_token"] == child
        for _ in range(3):
            again = refresh(after, parent)
            assert again.status_code == 400, again.text
            assert again.json()["error"] == "invalid_grant"
        assert refresh(after, child).status_code == 200, "the session is live"
