"""What the browser tests share: a real `keyturn serve --demo` reached as
`http://localhost:PORT` (the demo's origin and issuer), its database, and signing in."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Page

from keyturn.core.models import Session
from keyturn.settings import Settings
from keyturn.wiring import open_engine
from support.server import server_process

CHROMIUM = Path(os.environ.get("KEYTURN_TEST_CHROMIUM", "/usr/bin/chromium"))
# Without these, Chromium opens background connections (updates, sync, QUIC) and can
# hang on them where the network is closed.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "browser-master-secret-ospQlNHLa1mjmet6H_00gdgCad0FrG99"
COOKIE = "__Host-keyturn_rt_demo-web"  # the demo client's own refresh cookie
SHORT_ACCESS_TOKEN_TTL = 4
"""The demo client's access-token lifetime in the rotation tests: a few seconds to wait."""
WAIT_MS = 30_000

T = TypeVar("T")


def beside_playwright(function: Callable[..., T], *args: Any) -> T:
    """Run `function` in another thread: Playwright's sync API keeps an event loop
    running in this one, and `asyncio.run` refuses to start a second."""
    with ThreadPoolExecutor(1) as worker:
        return worker.submit(function, *args).result()


@dataclass(frozen=True)
class Demo:
    base: str
    password: str
    settings: Settings

    def sessions(self) -> list[Session]:
        """The demo user's sessions as the database holds them, newest first."""

        async def read() -> list[Session]:
            engine = await open_engine(self.settings)
            try:
                return await engine.admin.list_sessions("demo")
            finally:
                await engine.close()

        return beside_playwright(asyncio.run, read())

    def session(self, sid: str) -> Session:
        return next(s for s in self.sessions() if s.id == sid)


def printed_password(proc: subprocess.Popen[str]) -> str:
    """The password `keyturn serve --demo` printed in its banner."""
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, "the demo printed no password"
        found = re.fullmatch(r"\s*password\s+(\S+)\s*", line)
        if found:
            return found.group(1)


def start_demo(env: dict[str, str], settings: Settings) -> Iterator[Demo]:
    with server_process(env, args=["--demo"], host_name="localhost") as (base, proc):
        password = printed_password(proc)
        yield Demo(base, password, settings.model_copy(update={"issuer": base}))


def demo_environment(url: str, **extra: str) -> dict[str, str]:
    return {"KEYTURN_DATABASE_URL": url, "KEYTURN_SECRET_KEY": SECRET, **extra}


def sign_in(page: Page, demo: Demo) -> str:
    """Sign in on the demo page; returns the session id the protected call answered."""
    page.goto(f"{demo.base}/")
    page.wait_for_selector("#login-view:not([hidden])")
    page.fill("#password", demo.password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app-view:not([hidden])")
    page.wait_for_selector("#session-id:not(:empty)")
    return page.inner_text("#session-id")
