"""Building the HTTP answers: token responses (RFC 6749 §5.1) and errors (§5.2)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from keyturn.core.errors import KeyturnError
from keyturn.service.results import IssuedTokens
from keyturn.web.errors import NO_STORE, error_body, to_response
from keyturn.web.schemas import TokenResponse

_JSON_NO_STORE: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"application/json"),
    *((name.lower().encode(), value.encode()) for name, value in NO_STORE.items()),
)


class _Prepared(Response):
    """A response whose header block is known in advance: the hot path's token answer
    skips encoding the same headers on every request."""

    def __init__(self, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def token_response(issued: IssuedTokens, *, include_refresh_token: bool = True) -> Response:
    """RFC 6749 §5.1: the tokens, never cached; the API description's schema is
    `TokenResponse`'s."""
    body: TokenResponse = {
        "access_token": issued.access_token,
        "token_type": issued.token_type,
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    if include_refresh_token and issued.refresh_token is not None:
        body["refresh_token"] = issued.refresh_token
    return _Prepared(json.dumps(body, separators=(",", ":")).encode(), _JSON_NO_STORE)


def error_response(error: KeyturnError, *, basic_auth_used: bool = False) -> Response:
    answer = to_response(error, basic_auth_used=basic_auth_used)
    return Response(answer.body, status_code=answer.status, headers=answer.headers)


def plain_error(
    status: int, code: str, description: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        error_body(code, description),
        status_code=status,
        headers={"Content-Type": "application/json", **NO_STORE, **(headers or {})},
    )
