"""GET /.well-known/oauth-authorization-server (RFC 8414) and the JWKS (RFC 7517)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyturn.web.responses import json_response
from keyturn.wiring import Engine

JWKS_MAX_AGE = 300
"""Seconds a resource server may cache the key set; a next key is published longer
before it signs, and a retired one stays longer after, than this."""


AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


def metadata(issuer: str) -> dict[str, Any]:
    base = issuer.rstrip("/")
    return {
        "issuer": issuer,
        "token_endpoint": f"{base}/oauth/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        # Explicit, because an absent list means ["authorization_code", "implicit"].
        "grant_types_supported": ["refresh_token", "client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint": f"{base}/oauth/revoke",
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint": f"{base}/oauth/introspect",
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
    }


async def authorization_server(request: Request, engine: Engine) -> Response:
    return json_response(
        metadata(engine.config.issuer), headers={"Cache-Control": f"max-age={JWKS_MAX_AGE}"}
    )


async def jwks(request: Request, engine: Engine) -> Response:
    return json_response(
        await engine.tokens.jwks(), headers={"Cache-Control": f"max-age={JWKS_MAX_AGE}"}
    )
