"""Protecting Starlette and FastAPI routes with `keyturn.verify`.

FastAPI:

    read = require_scopes(verifier, "read")

    @app.get("/notes")
    async def notes(token: AccessToken = Depends(read)) -> list[Note]: ...

Starlette: `token = await read(request)` at the top of an endpoint. Failures are
`HTTPException`s answered as RFC 6750 §3 asks: 401 with `WWW-Authenticate: Bearer
error="invalid_token"`, 403 with `error="insufficient_scope"`, and 503 when the issuer's
keys cannot be had.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request

from keyturn.verify.verifier import (
    AccessToken,
    InsufficientScope,
    KeysUnavailable,
    TokenRejected,
    Verifier,
)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header (RFC 6750 §2.1), or `None`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def require_scopes(verifier: Verifier, *scopes: str) -> Callable[[Request], Awaitable[AccessToken]]:
    """A dependency that verifies the request's bearer token and that it carries every
    one of `scopes`; it returns the token and keeps it as `request.state.access_token`."""
    wanted = " ".join(scopes)

    async def dependency(request: Request) -> AccessToken:
        token = bearer_token(request)
        if token is None:
            # RFC 6750 §3.1: no error code when the request carried no token at all.
            raise HTTPException(401, "Bearer token required.", {"WWW-Authenticate": "Bearer"})
        try:
            verified = await verifier.verify_async(token)
            verified.require_scopes(*scopes)
        except TokenRejected:
            raise HTTPException(
                401,
                "The access token is invalid or expired.",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        except InsufficientScope:
            raise HTTPException(
                403,
                "The access token lacks a scope this call needs.",
                {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{wanted}"'},
            ) from None
        except KeysUnavailable:
            raise HTTPException(503, "The token issuer cannot be reached.") from None
        request.state.access_token = verified
        return verified

    return dependency
