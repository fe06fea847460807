"""Headless Chromium (Playwright, the system's `/usr/bin/chromium`) against a real
`keyturn serve --demo`, reached as `http://localhost:PORT`: the demo's origin and issuer.

Without Chromium these tests are skipped with a message, except in CI, where they fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from browser_demo import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SECRET,
    SHORT_ACCESS_TOKEN_TTL,
    Demo,
    beside_playwright,
    demo_environment,
    start_demo,
)
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from keyturn.settings import Settings
from support.availability import missing
from support.databases import create_pg_schema, drop_pg_schema
from support.server import free_port


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope: Playwright's sync API keeps an event loop running in this thread
    # while it is open, and tests of other modules start loops of their own.
    if not CHROMIUM.exists():
        missing(
            "Chromium",
            str(CHROMIUM),
            "install Debian's chromium (apt-get install chromium) or set KEYTURN_TEST_CHROMIUM",
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def rotating_demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Demo]:
    """A demo whose access tokens live a few seconds, on each store."""
    ttl = {"KEYTURN_DEMO_ACCESS_TOKEN_TTL": str(SHORT_ACCESS_TOKEN_TTL)}
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'keyturn.db'}"
        settings = Settings(database_url=url, secret_key=SECRET)
        yield from start_demo(demo_environment(url, **ttl), settings)
        return
    url = request.getfixturevalue("postgres_url")
    schema = beside_playwright(create_pg_schema, url)
    try:
        settings = Settings(database_url=url, secret_key=SECRET, db_schema=schema)
        yield from start_demo(demo_environment(url, KEYTURN_DB_SCHEMA=schema, **ttl), settings)
    finally:
        beside_playwright(drop_pg_schema, url, schema)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """A demo with the default 30 s access tokens: no rotation during a short test."""
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'keyturn.db'}"
    yield from start_demo(demo_environment(url), Settings(database_url=url, secret_key=SECRET))


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[], Page]]:
    """Pages, each in a browser context of its own (its own cookie jar), closed after
    the test. A page error (an uncaught exception, a CSP violation) fails the test."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def make() -> Page:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors == []


@pytest.fixture
def cross_site(demo: Demo) -> Iterator[str]:
    """A site of another origin (`http://127.0.0.1:PORT` against the demo's
    `http://localhost:PORT`) serving pages that try to use the demo's cookie: forms that
    submit themselves to /auth/refresh and /auth/logout, and a blank page."""
    target = demo.base

    def form(path: str) -> bytes:
        # text/plain lets a form send a body that looks like JSON; a JSON content type
        # is out of a form's reach.
        return (
            f'<form id="f" method="post" action="{target}{path}" enctype="text/plain">'
            '<input type="hidden" name=\'{"client_id":"demo-web","x":"\' value=\'"}\'>'
            '</form><script>document.getElementById("f").submit()</script>'
        ).encode()

    pages = {
        "/refresh-form": form("/auth/refresh"),
        "/logout-form": form("/auth/logout"),
        "/": b"<!doctype html><title>elsewhere</title><p>another site</p>",
    }

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
