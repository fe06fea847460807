"""POST /oauth/token (RFC 6749 §3.2, §4.1.3, §4.4, §5, §6): one branch per grant type."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyturn.core.errors import InvalidRequest, UnsupportedGrantType
from keyturn.core.scopes import parse_scope
from keyturn.service.client_auth import ClientCredentials
from keyturn.service.engine import Engine
from keyturn.web.client_auth import presented_credentials
from keyturn.web.context import request_context
from keyturn.web.dpop import proof_key, with_nonce
from keyturn.web.forms import read_oauth_form
from keyturn.web.limits import admit_client
from keyturn.web.operation import (
    CLIENT_401,
    CLIENT_BASIC,
    CLIENT_FIELDS,
    DPOP_ERRORS,
    DPOP_NONCE,
    NO_STORE_HEADER,
    OAUTH,
    TOKEN_CHARS,
    Operation,
    described,
    failures,
    form_body,
    json_answer,
)
from keyturn.web.responses import token_response
from keyturn.web.schemas import TOKEN_RESPONSE

DPOP_PARAMETER = {
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
GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials"]


@described(
    post=Operation(
        OAUTH,
        "Token endpoint (RFC 6749 §3.2, §4.1.3, §4.4, §6)",
        {
            "200": json_answer(
                "The tokens (RFC 6749 §5.1).", TOKEN_RESPONSE, {**NO_STORE_HEADER, **DPOP_NONCE}
            ),
            **failures(
                "invalid_request",
                "invalid_grant",
                "invalid_scope",
                "unauthorized_client",
                "unsupported_grant_type",
                *DPOP_ERRORS,
                unauthorized=CLIENT_401,
            ),
        },
        description="Form-encoded only; parameters in the URL are refused. Client "
        "authentication: `client_secret_basic` (RFC 6749 §2.3.1 encoding), "
        "`client_secret_post`, or `none` with `client_id` for public clients. "
        "The access token is an RFC 9068 JWT (`iss sub aud exp iat jti client_id "
        "scope`, and `sid` for a user's session). Its `sub` tells a user from a "
        "client (RFC 9068 §5): a user's token carries the user's id, always a UUID; "
        "a `client_credentials` token carries the client's own id, equal to "
        "`client_id`, never a UUID (registration refuses one), and has no `sid`.",
        security=CLIENT_BASIC,
        parameters=[DPOP_PARAMETER],
        body=form_body(
            {
                "grant_type": {"type": "string", "enum": GRANT_TYPES},
                "code": TOKEN_CHARS,
                "redirect_uri": {"type": "string"},
                "code_verifier": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{43,128}$"},
                "refresh_token": TOKEN_CHARS,
                "scope": {"type": "string"},
                **CLIENT_FIELDS,
            },
            ["grant_type"],
        ),
    )
)
async def token(request: Request, engine: Engine) -> Response:
    form = await read_oauth_form(request)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise InvalidRequest("The grant_type parameter is required.")
    credentials = presented_credentials(request.headers.get("authorization"), form)
    # Limits first, and only those this caller can spend (`web.limits`).
    admission = await admit_client(engine, request, credentials)
    # RFC 9449 §5: the proof is checked first, nonce included, so that a refused proof
    # or a nonce challenge leaves the code or refresh token exactly as it was.
    key = await proof_key(request, engine)
    async with admission.authenticating():
        return await _grant(request, engine, form, grant_type, credentials, key)


async def _grant(
    request: Request,
    engine: Engine,
    form: dict[str, str],
    grant_type: str,
    credentials: ClientCredentials,
    key: str | None,
) -> Response:
    """The grant, whose first step is the client's authentication."""
    refresh_token = form.get("refresh_token")
    if grant_type == "refresh_token" and refresh_token is not None:
        # The hot path: the client is read with the session, in one query.
        issued = await engine.refresher.refresh_for(
            credentials, refresh_token, form.get("scope"), request_context(request), key
        )
        return with_nonce(token_response(issued), engine, key)
    client = await engine.clients.authenticate(credentials)
    scope = parse_scope(form.get("scope"))
    if grant_type == "refresh_token":
        raise InvalidRequest("The refresh_token parameter is required.")
    if grant_type == "authorization_code":
        issued = await engine.authorization.exchange(
            client,
            form.get("code"),
            form.get("redirect_uri"),
            form.get("code_verifier"),
            request_context(request),
            key,
        )
        return with_nonce(token_response(issued), engine, key)
    if grant_type == "client_credentials":
        issued = await engine.client_credentials.issue(client, scope, key)
        return with_nonce(token_response(issued), engine, key)
    raise UnsupportedGrantType
