"""keyturn's sign-in page (GET/POST /oauth/authorize) in a real browser: usable without
JavaScript, its CSP lets the post-then-redirect reach the client's registered redirect
URI (Chromium applies `form-action` to that redirect), the browser's own `Origin` passes
the CSRF check, and a cross-site page cannot post the form."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from browser_demo import WAIT_MS, Demo, beside_playwright
from playwright.sync_api import Browser, Page

from keyturn.core.models import ClientType, GrantType
from keyturn.wiring import open_engine
from support.authorize import new_pkce
from support.server import free_port


@pytest.fixture(scope="module")
def client_site() -> Iterator[str]:
    """The client application's site, on another origin: a callback page, and a page
    that tries to post keyturn's sign-in form from there."""
    pages: dict[str, bytes] = {}

    class Site(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(urlsplit(self.path).path, b"<!doctype html><title>callback</title>")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Site)
    server.pages = pages  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def web_client(demo: Demo, client_site: str) -> str:
    """An authorization code client of the demo server, redirecting to `client_site`."""
    name = f"web-{secrets.token_hex(3)}"

    async def register() -> None:
        engine = await open_engine(demo.settings)
        try:
            await engine.admin.add_client(
                name,
                ClientType.PUBLIC,
                grant_types={GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN},
                scope=frozenset({"read"}),
                redirect_uris=[f"{client_site}/callback"],
            )
        finally:
            await engine.close()

    beside_playwright(asyncio.run, register())
    return name


def authorize_url(demo: Demo, client_id: str, redirect: str, challenge: str) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "state": "browser-state",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{demo.base}/oauth/authorize?{query}"


@pytest.fixture
def no_script_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(java_script_enabled=False)
    yield context.new_page()
    context.close()


def test_signing_in_without_javascript_lands_on_the_callback_with_a_code(
    demo: Demo, web_client: str, client_site: str, no_script_page: Page
) -> None:
    page = no_script_page
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    pkce = new_pkce()
    page.goto(authorize_url(demo, web_client, f"{client_site}/callback", pkce.challenge))
    assert page.get_by_label("Username").is_visible()
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill(demo.password)
    with page.expect_navigation(url=f"{client_site}/callback**", timeout=WAIT_MS):
        page.get_by_role("button", name="Sign in").click()
    query = parse_qs(urlsplit(page.url).query)
    assert query["code"][0].startswith("kt_ac_")
    assert query["state"] == ["browser-state"]
    assert query["iss"] == [demo.base]
    assert not [v for v in violations if "Content Security Policy" in v]


def test_a_wrong_password_shows_the_form_again_with_the_error(
    demo: Demo, web_client: str, client_site: str, no_script_page: Page
) -> None:
    page = no_script_page
    page.goto(authorize_url(demo, web_client, f"{client_site}/callback", new_pkce().challenge))
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert "Wrong username or password" in page.get_by_role("alert").inner_text()
    assert page.url.startswith(f"{demo.base}/oauth/authorize")


def test_a_cross_site_page_cannot_post_the_sign_in_form(
    demo: Demo, web_client: str, client_site: str, browser: Browser
) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        # The victim has the sign-in page open (so holds its CSRF cookie)...
        page.goto(authorize_url(demo, web_client, f"{client_site}/callback", new_pkce().challenge))
        token = page.locator("input[name=csrf_token]").get_attribute("value") or ""
        # ...and another site posts a filled-in copy of the form, token included.
        fields = {
            "response_type": "code",
            "client_id": web_client,
            "redirect_uri": f"{client_site}/callback",
            "code_challenge": new_pkce().challenge,
            "code_challenge_method": "S256",
            "csrf_token": token,
            "username": "demo",
            "password": demo.password,
        }
        inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
        attack = (
            f'<form id="f" method="post" action="{demo.base}/oauth/authorize">{inputs}</form>'
            '<script>document.getElementById("f").submit()</script>'
        )
        page.goto(f"{client_site}/blank")
        page.set_content(attack)
        page.wait_for_url(f"{demo.base}/oauth/authorize", timeout=WAIT_MS)
        assert "came from another site" in page.content()
        assert "code=" not in page.url
    finally:
        context.close()
