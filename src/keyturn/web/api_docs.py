"""GET /openapi.json and GET /docs: the OpenAPI description (`web/openapi.py`) and
Swagger UI to try it, served from the `swagger-ui-bundle` package's files by keyturn
itself (no CDN), under a CSP of their own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from swagger_ui_bundle import swagger_ui_path

from keyturn.service.engine import Engine
from keyturn.web.openapi import as_openapi_30, document
from keyturn.web.operation import OPERATIONS, Operation, cached, described, html_answer, json_answer
from keyturn.web.responses import json_response

DOCUMENT_MAX_AGE = 300
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui.css": ("bundle", "text/css"),
    "swagger-ui-bundle.js": ("bundle", "text/javascript"),
    "swagger-ui-standalone-preset.js": ("bundle", "text/javascript"),
    "favicon-32x32.png": ("bundle", "image/png"),
    "init.js": ("keyturn", "text/javascript"),
}
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>keyturn API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
<script src="/docs/assets/init.js"></script>
</body>
</html>
"""
# Swagger UI sets style attributes and inline SVG images; no inline script is needed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


# Set here, not only by the application's middleware: these answers keep their headers
# in any application that mounts them.
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
CACHED = {"Cache-Control": f"max-age={DOCUMENT_MAX_AGE}", **NOSNIFF}


@described(
    get=Operation(
        OPERATIONS,
        "This document",
        {
            "200": json_answer(
                "OpenAPI 3.1.",
                {"type": "object", "required": ["openapi", "info", "paths"]},
                cached(DOCUMENT_MAX_AGE),
            )
        },
    )
)
async def openapi_json(request: Request, engine: Engine) -> Response:
    return json_response(document(engine.config.issuer, request.app.routes), headers=dict(CACHED))


async def openapi_30_json(request: Request, engine: Engine) -> Response:
    """The same document in OpenAPI 3.0 terms, which is what Swagger UI 4 reads."""
    spec = document(engine.config.issuer, request.app.routes)
    return json_response(as_openapi_30(spec), headers=dict(CACHED))


@described(
    get=Operation(
        OPERATIONS,
        "Interactive documentation (Swagger UI)",
        {
            "200": html_answer(
                "The page; its scripts are files of keyturn's own (no CDN, no inline script).",
                {
                    "Content-Security-Policy": {
                        "required": True,
                        "schema": {
                            "type": "string",
                            "pattern": "script-src 'self';.*frame-ancestors 'none'",
                        },
                    },
                    "Referrer-Policy": {"required": True, "schema": {"const": "no-referrer"}},
                    "X-Content-Type-Options": {
                        "required": True,
                        "schema": {"const": NOSNIFF["X-Content-Type-Options"]},
                    },
                },
            )
        },
    )
)
async def docs_page(_request: Request, _engine: Engine) -> Response:
    return HTMLResponse(
        PAGE,
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            **NOSNIFF,
        },
    )


@cache
def _asset(name: str) -> bytes:
    origin, _ = ASSETS[name]
    if origin == "bundle":
        return Path(str(swagger_ui_path), name).read_bytes()
    return resources.files("keyturn.web").joinpath("static", "docs", name).read_bytes()


def asset_routes(
    endpoint: Callable[[Callable[[Request, Engine], Awaitable[Response]]], Any],
) -> list[Route]:
    """The Swagger UI files, and the 3.0 form of the document (through `endpoint`, the
    application's handler wrapper, since it needs the engine)."""

    def serve(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(_request: Request) -> Response:
            return Response(
                _asset(name),
                media_type=media_type,
                headers={"Cache-Control": "max-age=3600", **NOSNIFF},
            )

        return handler

    return [
        *(
            Route(f"/docs/assets/{name}", serve(name, kind), methods=["GET"])
            for name, (_, kind) in ASSETS.items()
        ),
        Route("/docs/assets/openapi-3.0.json", endpoint(openapi_30_json), methods=["GET"]),
    ]
