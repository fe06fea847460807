"""The OpenAPI 3.1 description of every endpoint keyturn serves, derived from the code.

`paths` is built by walking the application's routes, as starlette's `SchemaGenerator`
does: each handler declares its own operations beside it (`web.operation.described`:
summary, tag, inputs, every answer), the first-party bodies and the token response are
the schemas of the types the handlers parse and write (`web.schemas`), and the facts
the code owns (cookie and header names, lengths, the body limit, the §5.2 charset) are
its constants, imported. The property tests (schemathesis, `tests/e2e/test_openapi.py`)
send generated requests to a started server and check every answer against this
description; another test checks that every route is described.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from starlette.routing import BaseRoute, Route

from keyturn.web.metadata import AUTH_METHODS
from keyturn.web.operation import (
    NO_STORE_HEADER,
    RETRY_AFTER,
    TAGS,
    Operation,
    Schema,
    error,
    json_answer,
    operations_of,
)

UNDESCRIBED = "/docs/assets/"
"""Swagger UI's own files (and the 3.0 form of this document): not part of the API."""


def application_routes() -> list[BaseRoute]:
    """The routes of an application built as `keyturn serve` builds it (without the
    demo), for a description made outside a request (`docs/api.md`, the tests)."""
    from keyturn.settings import Settings  # web.app imports this module
    from keyturn.web.app import create_app

    secret = "openapi-description-only-kQ3v9TzLw2Rx8bNc5YhJ0pDf"
    return create_app(Settings(database_url="memory:", secret_key=secret)).routes


def described_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, dict[str, Operation]]]:
    """Each described path with its operations by method, in the order of `TAGS` and,
    within a tag, of the routes (the order the router tries them)."""
    found: list[tuple[str, dict[str, Operation]]] = []
    for route in routes:
        if not isinstance(route, Route):
            continue
        operations = operations_of(route.endpoint)
        if operations is None:
            continue
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        if set(operations) != methods:
            raise ValueError(
                f"{route.path} takes {sorted(methods)}, describes {sorted(operations)}"
            )
        found.append((route.path, dict(operations)))
    return sorted(found, key=lambda item: TAGS.index(next(iter(item[1].values())).tag))


def _edge_answers() -> dict[str, Schema]:
    """What the HTTP layer answers before any endpoint runs (`web.http_protocol`,
    `docs/decisions/http-edge.md`), so on every path: the connection is closed after."""
    return {
        "408": json_answer(
            "The request did not arrive within `KEYTURN_HTTP_HEADER_TIMEOUT`.",
            error("invalid_request"),
        ),
        "431": json_answer(
            "The header block is larger than `KEYTURN_HTTP_MAX_HEADER_BYTES` (RFC 6585 §5).",
            error("invalid_request"),
        ),
        "503": json_answer(
            "The worker is at `KEYTURN_HTTP_MAX_CONCURRENCY`: nothing was done.",
            error("temporarily_unavailable"),
            {**NO_STORE_HEADER, **RETRY_AFTER},
        ),
    }


def document(issuer: str, routes: Sequence[BaseRoute] | None = None) -> Schema:
    """The OpenAPI document for a server at `issuer` serving `routes` (by default, the
    application's): every operation also lists the answers of the HTTP layer in front
    of it (an operation's own 503 is kept)."""
    paths: Schema = {}
    for path, operations in described_routes(routes or application_routes()):
        paths[path] = {}
        for method, operation in operations.items():
            described = operation.as_openapi()
            for status, answer in _edge_answers().items():
                described["responses"].setdefault(status, answer)
            paths[path][method] = described
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keyturn",
            "version": version("keyturn"),
            "description": "A token service: OAuth 2.1 authorization server with rotating "
            "refresh tokens and reuse detection, and a first-party login API.",
        },
        "servers": [{"url": issuer}],
        "components": {
            "schemas": {
                "AuthMethods": {
                    "description": "Client authentication methods (RFC 6749 §2.3.1, OAuth "
                    "2.1 §2.4.1).",
                    "const": AUTH_METHODS,
                }
            },
            "securitySchemes": {
                "clientBasic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "dpop": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`DPoP <access token>` for a DPoP-bound token, with a "
                    "`DPoP` proof header carrying its `ath` (RFC 9449 §7.1).",
                },
            },
        },
        "paths": paths,
    }


def as_openapi_30(value: Any) -> Any:
    """The document in OpenAPI 3.0 terms, for Swagger UI 4 (which renders 3.0 only):
    `const` becomes a one-value `enum`, a `[type, "null"]` union becomes `nullable`."""
    if isinstance(value, list):
        return [as_openapi_30(item) for item in value]
    if not isinstance(value, dict):
        return value
    converted = {key: as_openapi_30(item) for key, item in value.items()}
    if "const" in converted:
        converted["enum"] = [converted.pop("const")]
    kind = converted.get("type")
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        converted["type"] = others[0] if len(others) == 1 else others
        if "null" in kind:
            converted["nullable"] = True
    if converted.get("openapi") == "3.1.0":
        converted["openapi"] = "3.0.3"
    return converted


ERROR_CODES = {
    "invalid_request": "malformed, missing or repeated parameter; wrong content type; "
    "parameters in the URL of a POST; cross-site request (403)",
    "invalid_client": "client authentication failed: unknown or disabled client, wrong or "
    "missing secret, a secret from a public client (401)",
    "invalid_grant": "the code or refresh token is invalid, expired, used, of another "
    "client, or its session ended; wrong PKCE verifier; failed login (401 on login)",
    "unauthorized_client": "the client is not registered for this grant",
    "unsupported_grant_type": "a grant keyturn does not serve at this endpoint",
    "unsupported_response_type": "anything but `response_type=code` (as a redirect)",
    "invalid_scope": "a scope beyond the client's or the session's",
    "invalid_token": "the bearer access token is invalid, expired or of an ended session; a "
    "DPoP-bound one sent as `Bearer`, or an unbound one as `DPoP`",
    "invalid_dpop_proof": "the DPoP proof is missing (a client registered with `--dpop "
    "required`), repeated, malformed, replayed, for another URI or method, or of another key "
    "than the token's; or DPoP is off for the client (400; 401 at a bearer endpoint)",
    "use_dpop_nonce": "the DPoP proof lacks the server's current nonce: retry with the one "
    "in `DPoP-Nonce` (400; 401 at a bearer endpoint); nothing was consumed",
    "not_found": "no such session of this user",
    "rate_limited": "over a limit; `Retry-After` says when to try again (429)",
    "temporarily_unavailable": "the database did not answer in time; nothing was issued or "
    "changed (503, `Retry-After`)",
}


def reference_markdown() -> str:
    """docs/api.md: every endpoint with what it takes and every answer it can give,
    written from the same description the server serves (a test keeps them in step)."""
    spec = document("https://keyturn.example")
    lines = [
        "# HTTP API reference",
        "",
        "Generated from the OpenAPI description (`src/keyturn/web/openapi.py`; served at",
        "`/openapi.json`, browsable at `/docs`). Regenerate with `./dev docs`.",
        'Every error body is `{"error": CODE, "error_description": TEXT}` (RFC 6749 §5.2),',
        "with `Cache-Control: no-store`.",
        "",
        "| error code | when |",
        "| --- | --- |",
        *(f"| `{code}` | {when} |" for code, when in ERROR_CODES.items()),
    ]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            lines += ["", f"## `{method.upper()} {path}`", "", operation["summary"] + "."]
            if "description" in operation:
                lines += ["", operation["description"]]
            lines += _inputs(operation)
            lines += [
                "",
                "| status | content | error codes | meaning |",
                "| --- | --- | --- | --- |",
            ]
            for status, answer in operation["responses"].items():
                content = answer.get("content", {})
                kind = ", ".join(f"`{c}`" for c in content) or "—"
                codes = _codes(content)
                meaning = answer["description"].replace("|", "\\|")
                lines.append(f"| {status} | {kind} | {codes} | {meaning} |")
    return "\n".join(lines) + "\n"


def _inputs(operation: Schema) -> list[str]:
    lines: list[str] = []
    parameters = operation.get("parameters", [])
    if parameters:
        names = ", ".join(
            f"`{p['name']}` ({p['in']}{', required' if p.get('required') else ''})"
            for p in parameters
        )
        lines += ["", f"Parameters: {names}."]
    body = operation.get("requestBody", {}).get("content", {})
    for media_type, entry in body.items():
        schema = entry["schema"]
        required = set(schema.get("required", []))
        fields = ", ".join(
            f"`{name}`{' (required)' if name in required else ''}"
            for name in schema.get("properties", {})
        )
        lines += ["", f"Body (`{media_type}`): {fields}."]
    return lines


def _codes(content: Schema) -> str:
    schema = content.get("application/json", {}).get("schema", {})
    enum = schema.get("properties", {}).get("error", {}).get("enum")
    return ", ".join(f"`{code}`" for code in enum) if enum else ""
