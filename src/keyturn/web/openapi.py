"""The OpenAPI 3.1 description of every endpoint keyturn serves, built in Python.

Built rather than written as one YAML file: the error shape, the headers and the
responses every endpoint shares are defined once here and used by name, so a change to
one of them cannot be made in three places and forgotten in a fourth. The property
tests (schemathesis, `tests/e2e/test_openapi.py`) send generated requests to a started
server and check every answer against this description; another test checks that it
lists exactly the routes the application has.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

VERSION = "0.1.0"

# Shared pieces


def _error(*codes: str) -> Schema:
    """RFC 6749 §5.2: `{"error", "error_description"}` with the codes one answer may use."""
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "enum": sorted(set(codes))},
            "error_description": {"type": "string", "pattern": r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$"},
        },
        "additionalProperties": False,
    }


NO_STORE = {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}}
CACHED = {"Cache-Control": {"required": True, "schema": {"type": "string", "const": "max-age=300"}}}
RETRY_AFTER = {
    "Retry-After": {"required": True, "schema": {"type": "string", "pattern": r"^[0-9]+$"}}
}
BASIC = {
    "WWW-Authenticate": {
        "description": "Present when the client authenticated with HTTP Basic (§5.2).",
        "schema": {"type": "string"},
    }
}
BEARER = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}


def _json(description: str, schema: Schema, headers: dict[str, Any] | None = None) -> Schema:
    answer: Schema = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _html(description: str, headers: dict[str, Any] | None = None) -> Schema:
    answer: Schema = {
        "description": description,
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _failures(*codes400: str, unauthorized: Schema | None = None) -> dict[str, Schema]:
    """What every API endpoint may answer besides success: 400 with `codes400`, 413 for
    a body over 16 KiB, 429 when rate-limited, 503 when the database does not answer."""
    answers: dict[str, Schema] = {}
    if codes400:
        answers["400"] = _json("Refused (RFC 6749 §5.2).", _error(*codes400), NO_STORE)
    if unauthorized is not None:
        answers["401"] = unauthorized
    answers["413"] = _json("The body is larger than 16 KiB.", _error("invalid_request"))
    answers["429"] = _json(
        "Over a rate limit; retry after the given seconds.",
        _error("rate_limited"),
        {**NO_STORE, **RETRY_AFTER},
    )
    answers["503"] = _json(
        "The database did not answer in time: nothing was issued or changed.",
        _error("temporarily_unavailable"),
        {**NO_STORE, **RETRY_AFTER},
    )
    return answers


def _status(word: str) -> Schema:
    return {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": word}},
        "additionalProperties": False,
    }


def _client_401() -> Schema:
    return _json("Client authentication failed.", _error("invalid_client"), {**NO_STORE, **BASIC})


def _bearer_401() -> Schema:
    return _json(
        "The access token is missing, invalid, expired or of an ended session; or, for a "
        "DPoP-bound token (`Authorization: DPoP`), its proof is missing or invalid, or "
        "lacks the nonce (`DPoP-Nonce` header, RFC 9449 §7.1, §9).",
        _error("invalid_token", *DPOP_ERRORS),
        {**NO_STORE, **BEARER, **DPOP_NONCE},
    )


DPOP_ERRORS = ("invalid_dpop_proof", "use_dpop_nonce")
DPOP_NONCE = {
    "DPoP-Nonce": {
        "description": "RFC 9449 §8: the nonce the next DPoP proof must carry; on a "
        "`use_dpop_nonce` refusal and on the answers to requests made with a proof.",
        "schema": {"type": "string"},
    }
}
DPOP_PARAMETER: Schema = {
    "name": "DPoP",
    "in": "header",
    "required": False,
    "description": "One DPoP proof (RFC 9449 §4) for this request, its `htu` the issuer "
    "followed by this path. With it, the access token is bound to the proof's key "
    "(`cnf.jkt`, `token_type` `DPoP`), and a public client's session too from its first "
    "token request. Two headers, a bad or replayed proof: `invalid_dpop_proof`; without "
    "the server's current nonce: `use_dpop_nonce` and a `DPoP-Nonce` header.",
    "schema": {"type": "string", "maxLength": 8192},
}


TOKEN_RESPONSE: Schema = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in", "scope"],
    "properties": {
        "access_token": {"type": "string", "description": "An RFC 9068 JWT."},
        "token_type": {"type": "string", "enum": ["Bearer", "DPoP"]},
        "expires_in": {"type": "integer", "minimum": 0},
        "scope": {"type": "string"},
        "refresh_token": {
            "type": "string",
            "pattern": "^kt_rt_",
            "description": "Absent for client credentials and for cookie-delivery clients.",
        },
    },
    "additionalProperties": False,
}

FORM = "application/x-www-form-urlencoded"
TOKEN_CHARS = {"type": "string", "maxLength": 8192}


def _form_body(properties: Schema, required: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": True, "content": {FORM: {"schema": schema}}}


def _json_body(properties: Schema, required: list[str]) -> Schema:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": properties, "required": required}
            }
        },
    }


CLIENT_FIELDS: Schema = {
    "client_id": {"type": "string", "description": "For client_secret_post and public clients."},
    "client_secret": {"type": "string", "description": "client_secret_post only."},
}
FIRST_PARTY_CLIENT: Schema = {
    "client_id": {"type": "string", "maxLength": 128},
    "client_secret": {"type": "string", "maxLength": 256},
}
TOKEN_ERRORS = (
    "invalid_request",
    "invalid_grant",
    "invalid_scope",
    "unauthorized_client",
    "unsupported_grant_type",
    *DPOP_ERRORS,
)
AUTHORIZE_PARAMETERS = [
    ("response_type", True, {"type": "string", "const": "code"}),
    ("client_id", True, {"type": "string", "maxLength": 128}),
    ("redirect_uri", False, {"type": "string", "format": "uri"}),
    ("scope", False, {"type": "string"}),
    ("state", False, {"type": "string", "maxLength": 2048}),
    ("code_challenge", True, {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"}),
    ("code_challenge_method", True, {"type": "string", "const": "S256"}),
]


def _authorize() -> Schema:
    query = [
        {"name": name, "in": "query", "required": required, "schema": schema}
        for name, required, schema in AUTHORIZE_PARAMETERS
    ]
    redirect = {
        "Location": {
            "required": True,
            "description": "The client's redirect URI with `error`, `error_description`, "
            "`state` and `iss` (RFC 6749 §4.1.2.1, RFC 9207).",
            "schema": {"type": "string"},
        }
    }
    user_pages = {
        "400": _html(
            "An unknown client or an unregistered redirect URI (never redirected), or a "
            "malformed request or form."
        ),
        "413": _html("The form is larger than 16 KiB."),
        "414": _html("The query is longer than 8 KiB."),
        "429": _html("Too many sign-in attempts.", RETRY_AFTER),
        "503": _html("The database did not answer: sign-in unavailable."),
    }
    sets_csrf = {
        "Set-Cookie": {
            "required": True,
            "description": "The CSRF cookie the form's `csrf_token` repeats: "
            "`__Host-keyturn_csrf` on an HTTPS issuer, `keyturn_csrf` on plain HTTP "
            "(local development), `HttpOnly`, `SameSite=Strict`, an hour.",
            "schema": {"type": "string", "pattern": "^(__Host-)?keyturn_csrf="},
        }
    }
    csrf_cookie = [
        {
            "name": name,
            "in": "cookie",
            "required": False,
            "description": "The CSRF cookie set by the sign-in page (double submit): "
            + ("HTTPS issuers." if name.startswith("__Host-") else "plain-HTTP issuers."),
            "schema": {"type": "string"},
        }
        for name in ("__Host-keyturn_csrf", "keyturn_csrf")
    ]
    form_fields = {name: schema for name, _, schema in AUTHORIZE_PARAMETERS}
    form_fields |= {
        "username": {"type": "string", "maxLength": 256},
        "password": {"type": "string", "maxLength": 1024},
        "csrf_token": {"type": "string", "description": "The value of the page's CSRF cookie."},
    }
    return {
        "get": {
            "tags": ["OAuth 2.1"],
            "summary": "Authorization request: the sign-in page (RFC 6749 §4.1.1, RFC 7636)",
            "parameters": query,
            "responses": {
                "200": _html("The sign-in form; sets the CSRF cookie.", {**NO_STORE, **sets_csrf}),
                "302": {"description": "An error sent back to the client.", "headers": redirect},
                **user_pages,
            },
        },
        "post": {
            "tags": ["OAuth 2.1"],
            "summary": "Sign in and get a code (RFC 6749 §4.1.2)",
            "description": "The sign-in form posted back with the CSRF cookie. Success is a "
            "303 to the redirect URI with `code`, `state` and `iss`.",
            "parameters": csrf_cookie,
            "requestBody": _form_body(form_fields),
            "responses": {
                "302": {"description": "An error sent back to the client.", "headers": redirect},
                "303": {
                    "description": "Signed in: back to the client with a code.",
                    "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
                },
                "401": _html("Wrong username or password: the form again."),
                "403": _html("The CSRF check failed (missing cookie, another site)."),
                **user_pages,
            },
        },
    }


def _token() -> Schema:
    return {
        "post": {
            "tags": ["OAuth 2.1"],
            "summary": "Token endpoint (RFC 6749 §3.2, §4.1.3, §4.4, §6)",
            "description": "Form-encoded only; parameters in the URL are refused. Client "
            "authentication: `client_secret_basic` (RFC 6749 §2.3.1 encoding), "
            "`client_secret_post`, or `none` with `client_id` for public clients. "
            "The access token is an RFC 9068 JWT (`iss sub aud exp iat jti client_id "
            "scope`, and `sid` for a user's session). Its `sub` tells a user from a "
            "client (RFC 9068 §5): a user's token carries the user's id, always a UUID; "
            "a `client_credentials` token carries the client's own id, equal to "
            "`client_id`, never a UUID (registration refuses one), and has no `sid`.",
            "security": [{}, {"clientBasic": []}],
            "parameters": [DPOP_PARAMETER],
            "requestBody": _form_body(
                {
                    "grant_type": {
                        "type": "string",
                        "enum": ["authorization_code", "refresh_token", "client_credentials"],
                    },
                    "code": TOKEN_CHARS,
                    "redirect_uri": {"type": "string"},
                    "code_verifier": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{43,128}$"},
                    "refresh_token": TOKEN_CHARS,
                    "scope": {"type": "string"},
                    **CLIENT_FIELDS,
                },
                ["grant_type"],
            ),
            "responses": {
                "200": _json(
                    "The tokens (RFC 6749 §5.1).", TOKEN_RESPONSE, {**NO_STORE, **DPOP_NONCE}
                ),
                **_failures(*TOKEN_ERRORS, unauthorized=_client_401()),
            },
        }
    }


def _inspection(summary: str, description: str, ok: Schema) -> Schema:
    return {
        "post": {
            "tags": ["OAuth 2.1"],
            "summary": summary,
            "description": description,
            "security": [{}, {"clientBasic": []}],
            "requestBody": _form_body(
                {
                    "token": TOKEN_CHARS,
                    "token_type_hint": {"type": "string"},
                    **CLIENT_FIELDS,
                },
                ["token"],
            ),
            "responses": {"200": ok, **_failures("invalid_request", unauthorized=_client_401())},
        }
    }


INTROSPECTION: Schema = {
    "oneOf": [
        {
            "description": "RFC 7662 §2.2: an inactive, unknown or foreign token; nothing "
            "more is said, not even why.",
            "type": "object",
            "required": ["active"],
            "properties": {"active": {"const": False}},
            "additionalProperties": False,
        },
        {
            "description": "A live refresh token (`token_type` `refresh_token`, with the "
            "session's scope and idle deadline) or access token (`Bearer`, or `DPoP` when "
            "bound to a key, with its claims); a bound token has `cnf.jkt` (RFC 9449 §6.2).",
            "type": "object",
            "required": ["active", "token_type", "client_id", "exp", "iss"],
            "properties": {
                "active": {"const": True},
                "token_type": {"enum": ["refresh_token", "Bearer", "DPoP"]},
                "scope": {"type": "string"},
                "client_id": {"type": "string"},
                "sub": {
                    "type": "string",
                    "description": "A user's token: the user's id, always a UUID. A "
                    "client-credentials token: the client's id, equal to `client_id`, "
                    "never a UUID (registration refuses one), and no `sid` (RFC 9068 §5).",
                },
                "exp": {"type": "integer"},
                "iat": {"type": "integer"},
                "iss": {"type": "string"},
                "aud": {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}, "minItems": 2},
                    ]
                },
                "jti": {"type": "string"},
                "sid": {"type": "string"},
                "cnf": {
                    "type": "object",
                    "required": ["jkt"],
                    "properties": {"jkt": {"type": "string"}},
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
    ]
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
        "grant_types_supported": {
            "const": ["authorization_code", "refresh_token", "client_credentials"]
        },
        "response_types_supported": {"const": ["code"]},
        "response_modes_supported": {"const": ["query"]},
        "code_challenge_methods_supported": {"const": ["S256"]},
        "authorization_response_iss_parameter_supported": {"const": True},
        "token_endpoint_auth_methods_supported": {"$ref": "#/components/schemas/AuthMethods"},
        "revocation_endpoint": {"type": "string", "pattern": "/oauth/revoke$"},
        "revocation_endpoint_auth_methods_supported": {"$ref": "#/components/schemas/AuthMethods"},
        "introspection_endpoint": {"type": "string", "pattern": "/oauth/introspect$"},
        "introspection_endpoint_auth_methods_supported": {
            "description": "No `none`: a public client is never answered here.",
            "const": ["client_secret_basic", "client_secret_post"],
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

SESSION: Schema = {
    "type": "object",
    "required": ["sid", "client_id", "device", "created_at", "last_used_at", "current"],
    "properties": {
        "sid": {"type": "string"},
        "client_id": {"type": "string"},
        "device": {
            "type": "object",
            "properties": {
                "name": {"type": ["string", "null"]},
                "user_agent": {"type": ["string", "null"]},
                "ip": {"type": ["string", "null"]},
            },
        },
        "created_at": {"type": "string", "format": "date-time"},
        "last_used_at": {"type": "string", "format": "date-time"},
        "current": {"type": "boolean"},
    },
    "additionalProperties": False,
}

SESSION_EVENTS: Schema = {
    "type": "object",
    "required": [
        "sid",
        "client_id",
        "created_at",
        "live",
        "ended_at",
        "ended_reason",
        "events",
        "next_cursor",
    ],
    "properties": {
        "sid": {"type": "string"},
        "client_id": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "live": {"type": "boolean"},
        "ended_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "When the session ended (or its deadline passed); null while live.",
        },
        "ended_reason": {
            "type": ["string", "null"],
            "description": "Why it ended: `logout`, `logout_all`, `reuse_outside_window`, "
            "`reuse_key_mismatch`, `replay_budget_exceeded`, `password_changed`, "
            "`idle_expired`, `absolute_expired`, `admin_revoked`, ... (the closed set of "
            "docs/observability.md); null while live.",
        },
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "at",
                    "kind",
                    "reason",
                    "generation",
                    "ip",
                    "user_agent",
                    "device_name",
                ],
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "kind": {
                        "type": "string",
                        "description": "`login_succeeded`, `session_created`, "
                        "`refresh_replayed`, `reuse_detected`, `session_revoked`, ...",
                    },
                    "reason": {"type": ["string", "null"]},
                    "generation": {
                        "type": ["integer", "null"],
                        "description": "The refresh token generation the event names: the "
                        "one presented, for a replay or a refusal.",
                    },
                    "ip": {"type": ["string", "null"]},
                    "user_agent": {"type": ["string", "null"]},
                    "device_name": {"type": ["string", "null"]},
                },
                "additionalProperties": False,
            },
        },
        "next_cursor": {
            "type": ["string", "null"],
            "description": "Pass as `cursor` for the next page; null on the last page.",
        },
    },
    "additionalProperties": False,
}

REFRESH_COOKIE = "__Host-keyturn_rt_{client_id}"
_COOKIE_NAME = r"__Host-keyturn_rt_[A-Za-z0-9_.~%-]+"
COOKIE_PARAMETERS = [
    {
        "name": "X-Keyturn-CSRF",
        "in": "header",
        "required": False,
        "description": "Must be `1` on every request of a cookie-delivery client (a "
        "cross-site form cannot send it); anything else is refused with 403. Such a "
        f"client's refresh token travels in its own cookie, `{REFRESH_COOKIE}` (the id "
        "percent-encoded; set by keyturn: `Secure`, `HttpOnly`, `SameSite=Strict`, "
        "`Path=/`). A body-delivery client sends `refresh_token` in the body instead; "
        "sending both is `invalid_request`.",
        "schema": {"type": "string", "const": "1"},
    },
]
SETS_REFRESH_COOKIE = {
    "Set-Cookie": {
        "description": "Cookie-delivery clients only: the new refresh token in "
        f"`{REFRESH_COOKIE}`, max-age the session's idle deadline; it is not in the body.",
        "schema": {"type": "string", "pattern": f"^{_COOKIE_NAME}="},
    }
}
CLEARS_REFRESH_COOKIE = {
    "Set-Cookie": {
        "description": f"The calling client's `{REFRESH_COOKIE}` emptied with `Max-Age=0`.",
        "schema": {"type": "string", "pattern": f'^{_COOKIE_NAME}=""; '},
    }
}
FIRST_PARTY_ERRORS = (
    "invalid_request",
    "invalid_grant",
    "invalid_scope",
    "unauthorized_client",
    *DPOP_ERRORS,
)


def _first_party_token(
    summary: str, properties: Schema, required: list[str], unauthorized: Schema
) -> Schema:
    return {
        "post": {
            "tags": ["First-party API"],
            "summary": summary,
            "parameters": [*COOKIE_PARAMETERS, DPOP_PARAMETER],
            "requestBody": _json_body(properties, required),
            "responses": {
                "200": _json(
                    "The tokens; for a cookie-delivery client the refresh token is only in "
                    f"the `{REFRESH_COOKIE}` cookie.",
                    TOKEN_RESPONSE,
                    {**NO_STORE, **SETS_REFRESH_COOKIE, **DPOP_NONCE},
                ),
                "401": unauthorized,
                "403": _json("Cross-site request refused (CSRF).", _error("invalid_request")),
                **_failures(*FIRST_PARTY_ERRORS),
            },
        }
    }


def _bearer_call(
    method: str,
    summary: str,
    ok: Schema,
    body: Schema | None = None,
    unauthorized: Schema | None = None,
    **extra: Schema,
) -> Schema:
    operation: Schema = {
        "tags": ["First-party API"],
        "summary": summary,
        "security": [{"bearer": []}, {"dpop": []}],
        "responses": {
            **ok,
            # RFC 6750 §3.1: a good token whose client may not act on the account.
            "403": _json(
                "The token's client may not act on the account: it needs the "
                "`keyturn:account` scope, or a first-party login client.",
                _error("insufficient_scope"),
                {**NO_STORE, **BEARER},
            ),
            **extra,
            **_failures("invalid_request", unauthorized=unauthorized or _bearer_401()),
        },
    }
    if body is not None:
        operation["requestBody"] = body
    return {method: operation}


def _edge_answers() -> dict[str, Schema]:
    """What the HTTP layer answers before any endpoint runs (`web.http_protocol`,
    `docs/decisions/http-edge.md`), so on every path: the connection is closed after."""
    return {
        "408": _json(
            "The request did not arrive within `KEYTURN_HTTP_HEADER_TIMEOUT`.",
            _error("invalid_request"),
        ),
        "431": _json(
            "The header block is larger than `KEYTURN_HTTP_MAX_HEADER_BYTES` (RFC 6585 §5).",
            _error("invalid_request"),
        ),
        "503": _json(
            "The worker is at `KEYTURN_HTTP_MAX_CONCURRENCY`: nothing was done.",
            _error("temporarily_unavailable"),
            {**NO_STORE, **RETRY_AFTER},
        ),
    }


def document(issuer: str) -> Schema:
    """The OpenAPI document for a server at `issuer`: every operation also lists the
    answers of the HTTP layer in front of it (an operation's own 503 is kept)."""
    described = _document(issuer)
    for operations in described["paths"].values():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for status, answer in _edge_answers().items():
                operation["responses"].setdefault(status, answer)
    return described


def _document(issuer: str) -> Schema:
    no_content = {"204": {"description": "Done.", "headers": NO_STORE}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keyturn",
            "version": VERSION,
            "description": "A token service: OAuth 2.1 authorization server with rotating "
            "refresh tokens and reuse detection, and a first-party login API.",
        },
        "servers": [{"url": issuer}],
        "components": {
            "schemas": {
                "AuthMethods": {
                    "description": "Client authentication methods (RFC 6749 §2.3.1, OAuth "
                    "2.1 §2.4.1).",
                    "const": ["client_secret_basic", "client_secret_post", "none"],
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
        "paths": {
            "/.well-known/oauth-authorization-server": {
                "get": {
                    "tags": ["Discovery"],
                    "summary": "Authorization server metadata (RFC 8414)",
                    "responses": {
                        "200": _json("The metadata.", METADATA, CACHED),
                        "503": _failures()["503"],
                    },
                }
            },
            "/.well-known/jwks.json": {
                "get": {
                    "tags": ["Discovery"],
                    "summary": "The public signing keys: next, active, retired-but-unexpired",
                    "responses": {
                        "200": _json("The JWK set (RFC 7517).", JWKS, CACHED),
                        "503": _failures()["503"],
                    },
                }
            },
            "/oauth/authorize": _authorize(),
            "/oauth/token": _token(),
            "/oauth/revoke": _inspection(
                "Revocation (RFC 7009): ends the token's session",
                "The client authenticates first (§2.1). A refresh or access token of the "
                "calling client ends its whole session; an unknown, malformed or expired "
                "token succeeds silently (§2.2). A token of another client stays live: a "
                "confidential caller is answered `invalid_request`, a public one 200. "
                "`token_type_hint` is accepted and not needed.",
                {"description": "Revoked, or nothing to revoke (§2.2).", "headers": NO_STORE},
            ),
            "/oauth/introspect": _inspection(
                "Introspection (RFC 7662)",
                "Only a confidential client is answered: a public client, whose "
                "`client_id` anyone can send, gets `invalid_client` (401) whatever the "
                "token (§2.1, §4). A client learns the state of its own tokens; one "
                "registered to introspect (a resource server) also of any access token. "
                "Any other token (another client's, unknown, rotated or ended) is "
                '`{"active": false}`, the same as garbage.',
                _json("The token's state.", INTROSPECTION, NO_STORE),
            ),
            "/auth/login": _first_party_token(
                "Log in with a username and password",
                {
                    "username": {"type": "string", "maxLength": 256},
                    "password": {"type": "string", "maxLength": 4096},
                    "device_name": {"type": "string", "maxLength": 100},
                    "scope": {"type": "string"},
                    "previous_refresh_token": {"type": "string"},
                    **FIRST_PARTY_CLIENT,
                },
                ["username", "password", "client_id"],
                _json(
                    "`invalid_grant`: wrong username or password, or a disabled user (one "
                    "answer for all); `invalid_client`: client authentication failed.",
                    _error("invalid_grant", "invalid_client"),
                    NO_STORE,
                ),
            ),
            "/auth/refresh": _first_party_token(
                "Rotate the refresh token (body, or the cookie with X-Keyturn-CSRF)",
                {"refresh_token": TOKEN_CHARS, "scope": {"type": "string"}, **FIRST_PARTY_CLIENT},
                ["client_id"],
                _json("Client authentication failed.", _error("invalid_client"), NO_STORE),
            ),
            "/auth/logout": {
                "post": {
                    "tags": ["First-party API"],
                    "summary": "End this session; clears the cookie",
                    "parameters": COOKIE_PARAMETERS,
                    "requestBody": _json_body(
                        {"refresh_token": TOKEN_CHARS, **FIRST_PARTY_CLIENT}, ["client_id"]
                    ),
                    "responses": {
                        "204": {
                            "description": "Ended, or nothing left to end (a dead or foreign "
                            "token, or no cookie).",
                            "headers": {**NO_STORE, **CLEARS_REFRESH_COOKIE},
                        },
                        "401": _json(
                            "Client authentication failed.", _error("invalid_client"), NO_STORE
                        ),
                        "403": _json("Cross-site request refused.", _error("invalid_request")),
                        **_failures("invalid_request"),
                    },
                }
            },
            "/auth/logout-all": _bearer_call(
                "post",
                "End every session of this user",
                {
                    "204": {
                        "description": "Every session ended; the refresh cookie cleared.",
                        "headers": {
                            **NO_STORE,
                            "Set-Cookie": {**CLEARS_REFRESH_COOKIE["Set-Cookie"], "required": True},
                        },
                    }
                },
            ),
            "/auth/sessions": _bearer_call(
                "get",
                "This user's live sessions",
                {"200": _json("The sessions.", {"type": "array", "items": SESSION}, NO_STORE)},
            ),
            "/auth/sessions/{sid}": {
                "parameters": [
                    {"name": "sid", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                **_bearer_call(
                    "delete",
                    "End one of this user's sessions",
                    no_content,
                    **{"404": _json("No such session of this user.", _error("not_found"))},
                ),
            },
            "/auth/sessions/{sid}/events": {
                "parameters": [
                    {"name": "sid", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "The `next_cursor` of the previous page.",
                        "schema": {"type": "string"},
                    },
                ],
                **_bearer_call(
                    "get",
                    "The events of one of this user's sessions, oldest first",
                    {
                        "200": _json(
                            "A page of the session's events (logins, replays, refusals, its "
                            "end; routine rotations are not events), and whether and why it "
                            "ended. Ended sessions too: ask with another session's token.",
                            SESSION_EVENTS,
                            NO_STORE,
                        )
                    },
                    **{
                        "404": _json(
                            "No such session of this user: another user's session, an "
                            "unknown id and a malformed one answer alike.",
                            _error("not_found"),
                        )
                    },
                ),
            },
            "/auth/password": _bearer_call(
                "post",
                "Change the password: this session stays, every other one ends",
                {
                    "200": _json(
                        "Changed.",
                        {
                            "type": "object",
                            "required": ["sessions_ended"],
                            "properties": {"sessions_ended": {"type": "integer", "minimum": 0}},
                        },
                        NO_STORE,
                    )
                },
                _json_body(
                    {
                        "current_password": {"type": "string", "maxLength": 4096},
                        "new_password": {"type": "string", "maxLength": 4096},
                    },
                    ["current_password", "new_password"],
                ),
                unauthorized=_json(
                    "`invalid_token` (with `WWW-Authenticate`) for the bearer token, "
                    "`invalid_grant` for a wrong current password.",
                    _error("invalid_token", "invalid_grant"),
                    {**NO_STORE, "WWW-Authenticate": {"schema": {"type": "string"}}},
                ),
            ),
            "/auth/revocations": {
                "get": {
                    "tags": ["Resource servers"],
                    "summary": "The revocation feed: sessions ended since a cursor",
                    "security": [{"clientBasic": []}],
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    ],
                    "responses": {
                        "200": _json(
                            "Revoked sessions in order, and where to continue.",
                            {
                                "type": "object",
                                "required": ["revocations", "cursor", "more"],
                                "properties": {
                                    "revocations": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["sid", "revoked_at", "forget_after"],
                                            "properties": {
                                                "sid": {"type": "string"},
                                                "revoked_at": {"type": "integer"},
                                                "forget_after": {"type": "integer"},
                                            },
                                        },
                                    },
                                    "cursor": {"type": "string"},
                                    "more": {"type": "boolean"},
                                },
                            },
                            NO_STORE,
                        ),
                        **_failures("invalid_request", unauthorized=_client_401()),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "tags": ["Operations"],
                    "summary": "The process is up",
                    "responses": {"200": _json("Up.", _status("ok"))},
                }
            },
            "/readyz": {
                "get": {
                    "tags": ["Operations"],
                    "summary": "The database answers",
                    "responses": {
                        "200": _json("Ready.", _status("ready")),
                        "503": _failures()["503"],
                    },
                }
            },
            "/metrics": {
                "get": {
                    "tags": ["Operations"],
                    "summary": "Prometheus metrics",
                    "description": "Closed by default: only for `Authorization: Bearer` "
                    "with `KEYTURN_METRICS_TOKEN`, or for anyone if `KEYTURN_METRICS_PUBLIC` "
                    "is set. Unset, every scrape is refused.",
                    "responses": {
                        "200": {
                            "description": "The text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _json(
                            "The metrics token is missing or wrong, or none is configured "
                            "(one answer for all).",
                            _error("invalid_token"),
                            {**NO_STORE, **BEARER},
                        ),
                    },
                }
            },
            "/static/keyturn.js": {
                "get": {
                    "tags": ["Browser client"],
                    "summary": "The browser client (an ES module)",
                    "responses": {
                        "200": {
                            "description": "JavaScript.",
                            "content": {"text/javascript": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "tags": ["Operations"],
                    "summary": "This document",
                    "responses": {
                        "200": _json(
                            "OpenAPI 3.1.",
                            {"type": "object", "required": ["openapi", "info", "paths"]},
                            CACHED,
                        )
                    },
                }
            },
            "/docs": {
                "get": {
                    "tags": ["Operations"],
                    "summary": "Interactive documentation (Swagger UI)",
                    "responses": {
                        "200": _html(
                            "The page; its scripts are files of keyturn's own (no CDN, no "
                            "inline script).",
                            {
                                "Content-Security-Policy": {
                                    "required": True,
                                    "schema": {
                                        "type": "string",
                                        "pattern": "script-src 'self';.*frame-ancestors 'none'",
                                    },
                                },
                                "Referrer-Policy": {
                                    "required": True,
                                    "schema": {"const": "no-referrer"},
                                },
                                "X-Content-Type-Options": {
                                    "required": True,
                                    "schema": {"const": "nosniff"},
                                },
                            },
                        )
                    },
                }
            },
        },
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
        "`/openapi.json`, browsable at `/docs`). Regenerate with",
        '`./dev python -c "from keyturn.web.openapi import reference_markdown as r; '
        "open('docs/api.md','w').write(r())\"`.",
        'Every error body is `{"error": CODE, "error_description": TEXT}` (RFC 6749 §5.2),',
        "with `Cache-Control: no-store`.",
        "",
        "| error code | when |",
        "| --- | --- |",
        *(f"| `{code}` | {when} |" for code, when in ERROR_CODES.items()),
    ]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            lines += ["", f"## `{method.upper()} {path}`", "", operation["summary"] + "."]
            if "description" in operation:
                lines += ["", operation["description"]]
            lines += _inputs(operation, operations.get("parameters", []))
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


def _inputs(operation: Schema, shared: list[Schema]) -> list[str]:
    lines: list[str] = []
    parameters = [*shared, *operation.get("parameters", [])]
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
