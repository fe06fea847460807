"""GET /.well-known/oauth-authorization-server (RFC 8414) and the JWKS (RFC 7517)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyturn.service.engine import Engine
from keyturn.web.oauth_token import GRANT_TYPES
from keyturn.web.operation import (
    DISCOVERY,
    UNAVAILABLE,
    Operation,
    Schema,
    cached,
    described,
    json_answer,
)
from keyturn.web.responses import json_response

JWKS_MAX_AGE = 300
"""Seconds a resource server may cache the key set; a next key is published longer
before it signs, and a retired one stays longer after, than this."""


AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
INTROSPECTION_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
"""RFC 7662 §2.1: a public client (`none`) is never answered at the introspection
endpoint, so it is not offered there."""
RESPONSE_TYPES = ["code"]
RESPONSE_MODES = ["query"]
CODE_CHALLENGE_METHODS = ["S256"]


def metadata(issuer: str, scopes: list[str], dpop_algorithms: Sequence[str] = ()) -> dict[str, Any]:
    base = issuer.rstrip("/")
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "scopes_supported": scopes,
        # Explicit, because an absent list means ["authorization_code", "implicit"].
        "grant_types_supported": list(GRANT_TYPES),
        "response_types_supported": list(RESPONSE_TYPES),
        "response_modes_supported": list(RESPONSE_MODES),
        # RFC 7636 §4.2; "plain" is never accepted (RFC 9700 §2.1.1).
        "code_challenge_methods_supported": list(CODE_CHALLENGE_METHODS),
        # RFC 9207: every authorization response carries `iss`.
        "authorization_response_iss_parameter_supported": True,
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint": f"{base}/oauth/revoke",
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "introspection_endpoint": f"{base}/oauth/introspect",
        "introspection_endpoint_auth_methods_supported": list(INTROSPECTION_AUTH_METHODS),
        # RFC 9449 §5.1: the proof algorithms the token endpoint accepts.
        "dpop_signing_alg_values_supported": list(dpop_algorithms),
    }


METADATA: Schema = {
    "type": "object",
    "description": "RFC 8414 §2; every endpoint URL is under the issuer.",
    "required": [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "scopes_supported",
        "grant_types_supported",
        "response_types_supported",
        "response_modes_supported",
        "code_challenge_methods_supported",
        "authorization_response_iss_parameter_supported",
        "token_endpoint_auth_methods_supported",
        "revocation_endpoint",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint",
        "introspection_endpoint_auth_methods_supported",
        "dpop_signing_alg_values_supported",
    ],
    "properties": {
        "issuer": {"type": "string", "format": "uri"},
        "authorization_endpoint": {"type": "string", "pattern": "/oauth/authorize$"},
        "token_endpoint": {"type": "string", "pattern": "/oauth/token$"},
        "jwks_uri": {"type": "string", "pattern": "/\\.well-known/jwks\\.json$"},
        "scopes_supported": {
            "description": "The union of the enabled clients' scopes.",
            "type": "array",
            "items": {"type": "string"},
            "uniqueItems": True,
        },
        "grant_types_supported": {"const": GRANT_TYPES},
        "response_types_supported": {"const": RESPONSE_TYPES},
        "response_modes_supported": {"const": RESPONSE_MODES},
        "code_challenge_methods_supported": {"const": CODE_CHALLENGE_METHODS},
        "authorization_response_iss_parameter_supported": {"const": True},
        "token_endpoint_auth_methods_supported": {"$ref": "#/components/schemas/AuthMethods"},
        "revocation_endpoint": {"type": "string", "pattern": "/oauth/revoke$"},
        "revocation_endpoint_auth_methods_supported": {"$ref": "#/components/schemas/AuthMethods"},
        "introspection_endpoint": {"type": "string", "pattern": "/oauth/introspect$"},
        "introspection_endpoint_auth_methods_supported": {
            "description": "No `none`: a public client is never answered here.",
            "const": INTROSPECTION_AUTH_METHODS,
        },
        "dpop_signing_alg_values_supported": {
            "description": "RFC 9449 §5.1: the DPoP proof algorithms accepted.",
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
        },
    },
    "additionalProperties": False,
}

# A public JWK set never holds a private or symmetric key parameter (RFC 7518 §6).
PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
JWKS: Schema = {
    "type": "object",
    "required": ["keys"],
    "properties": {
        "keys": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["kty", "kid", "use", "alg"],
                "properties": {
                    "kty": {"enum": ["EC", "OKP", "RSA"]},
                    "kid": {"type": "string", "minLength": 1},
                    "use": {"const": "sig"},
                    "alg": {"enum": ["ES256", "EdDSA", "RS256"]},
                    "crv": {"enum": ["P-256", "Ed25519"]},
                    "x": {"type": "string"},
                    "y": {"type": "string"},
                    "n": {"type": "string"},
                    "e": {"type": "string"},
                },
                "not": {"anyOf": [{"required": [m]} for m in PRIVATE_JWK_MEMBERS]},
            },
        }
    },
    "additionalProperties": False,
}


@described(
    get=Operation(
        DISCOVERY,
        "Authorization server metadata (RFC 8414)",
        {"200": json_answer("The metadata.", METADATA, cached(JWKS_MAX_AGE)), "503": UNAVAILABLE},
    )
)
async def authorization_server(_request: Request, engine: Engine) -> Response:
    # The scopes a client may be granted: the union of the enabled clients' scopes.
    clients = await engine.admin.list_clients()
    scopes = sorted({s for c in clients if c.enabled for s in c.scope})
    return json_response(
        metadata(engine.config.issuer, scopes, engine.dpop.algorithms),
        headers={"Cache-Control": f"max-age={JWKS_MAX_AGE}"},
    )


@described(
    get=Operation(
        DISCOVERY,
        "The public signing keys: next, active, retired-but-unexpired",
        {
            "200": json_answer("The JWK set (RFC 7517).", JWKS, cached(JWKS_MAX_AGE)),
            "503": UNAVAILABLE,
        },
    )
)
async def jwks(_request: Request, engine: Engine) -> Response:
    return json_response(
        await engine.tokens.jwks(), headers={"Cache-Control": f"max-age={JWKS_MAX_AGE}"}
    )
