"""GET /.well-known/oauth-authorization-server (RFC 8414) and the JWKS (RFC 7517)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyturn.service.engine import Engine
from keyturn.web.responses import json_response

JWKS_MAX_AGE = 300
"""Seconds a resource server may cache the key set; a next key is published longer
before it signs, and a retired one stays longer after, than this."""


AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
INTROSPECTION_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
"""RFC 7662 §2.1: a public client (`none`) is never answered at the introspection
endpoint, so it is not offered there."""


def metadata(issuer: str, scopes: list[str], dpop_algorithms: Sequence[str] = ()) -> dict[str, Any]:
    base = issuer.rstrip("/")
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "scopes_supported": scopes,
        # Explicit, because an absent list means ["authorization_code", "implicit"].
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        # RFC 7636 §4.2; "plain" is never accepted (RFC 9700 §2.1.1).
        "code_challenge_methods_supported": ["S256"],
        # RFC 9207: every authorization response carries `iss`.
        "authorization_response_iss_parameter_supported": True,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint": f"{base}/oauth/revoke",
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint": f"{base}/oauth/introspect",
        "introspection_endpoint_auth_methods_supported": INTROSPECTION_AUTH_METHODS,
        # RFC 9449 §5.1: the proof algorithms the token endpoint accepts.
        "dpop_signing_alg_values_supported": list(dpop_algorithms),
    }


async def authorization_server(_request: Request, engine: Engine) -> Response:
    # The scopes a client may be granted: the union of the enabled clients' scopes.
    clients = await engine.admin.list_clients()
    scopes = sorted({s for c in clients if c.enabled for s in c.scope})
    return json_response(
        metadata(engine.config.issuer, scopes, engine.dpop.algorithms),
        headers={"Cache-Control": f"max-age={JWKS_MAX_AGE}"},
    )


async def jwks(_request: Request, engine: Engine) -> Response:
    return json_response(
        await engine.tokens.jwks(), headers={"Cache-Control": f"max-age={JWKS_MAX_AGE}"}
    )
