"""/docs on its own: the page and Swagger UI's files carry their security headers without
the application's middleware, load no script inline or from another site, and ship in
the package; the document Swagger UI reads is plain OpenAPI 3.0."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from keyturn.web import api_docs
from keyturn.web.app import endpoint
from keyturn.web.openapi import as_openapi_30, document


@pytest.fixture
async def bare() -> AsyncIterator[httpx.AsyncClient]:
    """The docs routes alone: no SecurityHeaders middleware, no engine."""
    app = Starlette(
        routes=[
            Route("/docs", endpoint(api_docs.docs_page), methods=["GET"]),
            *(r for r in api_docs.asset_routes(endpoint) if "openapi" not in r.path),
        ]
    )
    app.state.engine = None  # the page and its files need none
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keyturn") as client:
        yield client


async def test_the_docs_page_sets_its_own_security_headers(bare: httpx.AsyncClient) -> None:
    page = await bare.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = {
        name: value
        for name, _, value in (
            part.strip().partition(" ")
            for part in page.headers["content-security-policy"].split(";")
        )
    }
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["img-src"] == "'self' data:"
    assert csp["connect-src"] == "'self'"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"


async def test_the_page_loads_only_keyturns_own_files(bare: httpx.AsyncClient) -> None:
    html = (await bare.get("/docs")).text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts
    for attributes, inline in scripts:
        assert inline.strip() == "", "no inline script: the CSP allows none"
        assert re.fullmatch(r' src="/docs/assets/[\w.-]+\.js"', attributes)
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/docs/assets/"), url
        answer = await bare.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["x-content-type-options"] == "nosniff"
    init = await bare.get("/docs/assets/init.js")
    assert init.headers["content-type"].startswith("text/javascript")
    assert 'url: "/docs/assets/openapi-3.0.json"' in init.text


async def test_only_the_listed_files_are_served(bare: httpx.AsyncClient) -> None:
    for path in (
        "/docs/assets/../api_docs.py",
        "/docs/assets/%2e%2e/api_docs.py",
        "/docs/assets/index.html",
        "/docs/assets/swagger-ui.js.map",
    ):
        assert (await bare.get(path)).status_code == 404, path


def test_the_initializer_ships_in_the_package() -> None:
    # Package data under src/keyturn, which hatchling puts in the wheel with the code.
    init = resources.files("keyturn.web").joinpath("static", "docs", "init.js")
    assert init.is_file()
    assert "SwaggerUIBundle" in init.read_text()


def _walk(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [found for item in value for found in _walk(item)]
    if isinstance(value, dict):
        return [value, *(found for item in value.values() for found in _walk(item))]
    return []


def test_swagger_ui_gets_the_document_in_openapi_30_terms() -> None:
    spec = document("https://issuer.test")
    older = as_openapi_30(spec)
    assert older["openapi"] == "3.0.3"
    assert older["paths"].keys() == spec["paths"].keys()
    for schema in _walk(older):
        assert "const" not in schema
        assert not isinstance(schema.get("type"), list)
