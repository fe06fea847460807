"""Security headers over real HTTP: a strict policy on every HTML page, `nosniff` on
every response, and a handler's own header kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from conftest import SECRET, Server
from keyturn.web.security_headers import CONTENT_SECURITY_POLICY, SecurityHeaders
from support.server import server_process

HTML_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
}


@pytest.fixture(scope="module")
def demo_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("demo-headers")
    env = {
        "KEYTURN_DATABASE_URL": f"sqlite:///{folder / 'keyturn.db'}",
        "KEYTURN_SECRET_KEY": SECRET,
    }
    with server_process(env, args=["--demo"], host_name="localhost") as (base, _):
        yield base


def test_the_demo_page_gets_every_html_header(demo_base: str) -> None:
    response = httpx.get(f"{demo_base}/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for name, value in HTML_HEADERS.items():
        assert response.headers[name] == value, name


def test_the_policy_allows_no_inline_script_and_no_framing() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("path", ["/static/keyturn.js", "/static/demo/demo.js", "/healthz"])
def test_other_responses_get_nosniff_and_no_page_policy(demo_base: str, path: str) -> None:
    response = httpx.get(f"{demo_base}{path}")
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in response.headers


def test_scripts_are_served_as_javascript(demo_base: str) -> None:
    for path in ("/static/keyturn.js", "/static/demo/demo.js"):
        response = httpx.get(f"{demo_base}{path}")
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    css = httpx.get(f"{demo_base}/static/demo/demo.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"


def test_errors_get_nosniff(server: Server) -> None:
    for response in (
        httpx.get(f"{server.base}/no-such-page"),
        httpx.post(f"{server.base}/auth/login", json={}),
        httpx.post(f"{server.base}/oauth/token", data={"grant_type": "password"}),
    ):
        assert response.status_code >= 400
        assert response.headers["x-content-type-options"] == "nosniff"


def test_without_demo_there_is_no_page_at_the_root(server: Server) -> None:
    for path in ("/", "/demo/api/me", "/static/demo/demo.js"):
        assert httpx.get(f"{server.base}{path}").status_code == 404, path
    assert httpx.get(f"{server.base}/static/keyturn.js").status_code == 200


async def test_a_header_the_handler_set_is_kept() -> None:
    async def own_policy(request: Request) -> Response:
        return HTMLResponse(
            "<p>hi</p>",
            headers={
                "Content-Security-Policy": "default-src 'none'; form-action https://client.test",
                "X-Frame-Options": "SAMEORIGIN",
            },
        )

    app = Starlette(routes=[Route("/", own_policy)])
    transport = httpx.ASGITransport(app=SecurityHeaders(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    assert response.headers.get_list("content-security-policy") == [
        "default-src 'none'; form-action https://client.test"
    ]
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
