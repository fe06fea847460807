"""The first-party API: /auth/login, /auth/refresh, /auth/logout, /auth/logout-all,
/auth/sessions, /auth/password. JSON in, RFC 6749 §5.1/§5.2-shaped JSON out.

A client registered with `--delivery body` gets its refresh token in the body; one
registered with `--delivery cookie` only ever in a `__Host-` cookie of its own
(`refresh_cookie`: Secure, HttpOnly, SameSite=Strict, Path=/), and a request
authenticated by that cookie must carry the
custom header `X-Keyturn-CSRF` (which a cross-site form cannot send and a cross-site
fetch cannot send without a preflight we never grant) and, when it has one, an Origin
the client registered. SameSite is defence in depth, not the defence.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from keyturn.core.errors import InvalidGrant, InvalidRequest
from keyturn.core.models import Client, Delivery, RevocationReason
from keyturn.core.scopes import parse_scope
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from keyturn.service.engine import Engine
from keyturn.service.results import IssuedTokens
from keyturn.web.context import request_context
from keyturn.web.dpop import current_session, proof_key, with_nonce
from keyturn.web.errors import NO_STORE, CrossSiteRefused
from keyturn.web.forms import parse_json_object, read_limited
from keyturn.web.limits import Admission, admit_client, limit_login_address
from keyturn.web.oauth_token import DPOP_PARAMETER
from keyturn.web.operation import (
    DPOP_ERRORS,
    DPOP_NONCE,
    FIRST_PARTY,
    NO_CONTENT,
    NO_STORE_HEADER,
    Operation,
    Schema,
    bearer_call,
    described,
    error,
    failures,
    json_answer,
    json_body,
    sid_parameter,
)
from keyturn.web.responses import json_response, token_response
from keyturn.web.schemas import (
    TOKEN_RESPONSE,
    Body,
    ClientFields,
    LoginFields,
    LogoutFields,
    PasswordChange,
    PasswordChanged,
    RefreshFields,
    parse,
    schema_of,
)

COOKIE_PREFIX = "__Host-keyturn_rt_"
CSRF_HEADER = "X-Keyturn-CSRF"
CSRF_VALUE = "1"


def refresh_cookie(client_id: str) -> str:
    """The name of the refresh cookie of cookie client `client_id`.

    One cookie per client: two first-party apps signing in at one keyturn host each
    keep their own session, and one's login or logout never reads, replaces or clears
    the other's token. The id is percent-encoded (every byte but letters, digits and
    `-._~`), which leaves only RFC 6265 token characters and is one-to-one, so no two
    clients share a name.
    """
    return COOKIE_PREFIX + quote(client_id, safe="")


async def _json(request: Request) -> dict[str, Any]:
    if request.scope.get("query_string"):
        raise InvalidRequest("Send the parameters in the JSON body, not the URL.")
    body = await read_limited(request.stream(), request.headers.get("content-length"))
    return parse_json_object(request.headers.get("content-type"), body)


def _credentials(data: dict[str, Any]) -> ClientCredentials:
    # The client's members alone, first: a fault elsewhere in the body is answered only
    # once the client has authenticated, as the endpoints always have.
    client = parse(ClientFields, data)
    method = AuthMethod.POST if client.client_secret is not None else AuthMethod.NONE
    return ClientCredentials(client.client_id, client.client_secret, method)


async def _client(engine: Engine, data: dict[str, Any]) -> Client:
    return await engine.clients.authenticate(_credentials(data))


async def _admitted_client(admission: Admission, engine: Engine, data: dict[str, Any]) -> Client:
    """The client of a login, refresh or logout, its authentication counted (`web.limits`)."""
    async with admission.authenticating():
        return await _client(engine, data)


def _set_cookie(response: Response, issued: IssuedTokens, client: Client) -> None:
    assert issued.refresh_expires_at is not None  # noqa: S101 - a session's grant has one
    now = datetime.now(UTC)
    max_age = max(0, int((issued.refresh_expires_at - now).total_seconds()))
    response.set_cookie(
        refresh_cookie(client.id),
        issued.refresh_token or "",
        max_age=max_age,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def _clear_cookie(response: Response, client_id: str) -> None:
    # Deleting a __Host- cookie needs the same Secure and Path=/, or the browser keeps it.
    response.set_cookie(
        refresh_cookie(client_id),
        "",
        max_age=0,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def _answer(issued: IssuedTokens, client: Client) -> Response:
    if client.delivery is Delivery.COOKIE:
        response = token_response(issued, include_refresh_token=False)
        _set_cookie(response, issued, client)
        return response
    return token_response(issued)


def _check_cross_site(request: Request, client: Client) -> None:
    """The CSRF defence for cookie-authenticated requests."""
    if request.headers.get(CSRF_HEADER) != CSRF_VALUE:
        raise CrossSiteRefused(detail="missing CSRF header")
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise CrossSiteRefused(detail="cross-site fetch")
    origin = request.headers.get("origin")
    if origin is not None and origin not in client.allowed_origins:
        raise CrossSiteRefused(detail="foreign origin")


def _presented_refresh_token(request: Request, in_body: str | None, client: Client) -> str:
    """The refresh token of a refresh or logout: from the cookie (cookie clients, with
    the CSRF checks) or the body (body clients), never both."""
    in_cookie = request.cookies.get(refresh_cookie(client.id))
    if in_body is not None and in_cookie:
        raise InvalidRequest("Send the refresh token once: cookie or body, not both.")
    if client.delivery is Delivery.COOKIE:
        if not in_cookie:
            raise InvalidRequest("The refresh cookie is missing.")
        _check_cross_site(request, client)
        return in_cookie
    if in_body is None:
        raise InvalidRequest("The refresh_token field is required.")
    return in_body


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


# The description of these endpoints (`web.openapi`)

REFRESH_COOKIE = f"{COOKIE_PREFIX}{{client_id}}"
_COOKIE_PATTERN = f"{COOKIE_PREFIX}[A-Za-z0-9_.~%-]+"  # the percent-encoded id
COOKIE_PARAMETERS = [
    {
        "name": CSRF_HEADER,
        "in": "header",
        "required": False,
        "description": f"Must be `{CSRF_VALUE}` on every request of a cookie-delivery client "
        "(a cross-site form cannot send it); anything else is refused with 403. Such a "
        f"client's refresh token travels in its own cookie, `{REFRESH_COOKIE}` (the id "
        "percent-encoded; set by keyturn: `Secure`, `HttpOnly`, `SameSite=Strict`, "
        "`Path=/`). A body-delivery client sends `refresh_token` in the body instead; "
        "sending both is `invalid_request`.",
        "schema": {"type": "string", "const": CSRF_VALUE},
    },
]
SETS_REFRESH_COOKIE = {
    "Set-Cookie": {
        "description": "Cookie-delivery clients only: the new refresh token in "
        f"`{REFRESH_COOKIE}`, max-age the session's idle deadline; it is not in the body.",
        "schema": {"type": "string", "pattern": f"^{_COOKIE_PATTERN}="},
    }
}
CLEARS_REFRESH_COOKIE = {
    "Set-Cookie": {
        "description": f"The calling client's `{REFRESH_COOKIE}` emptied with `Max-Age=0`.",
        "schema": {"type": "string", "pattern": f'^{_COOKIE_PATTERN}=""; '},
    }
}
CROSS_SITE = json_answer("Cross-site request refused (CSRF).", error("invalid_request"))
CLIENT_REFUSED = json_answer(
    "Client authentication failed.", error("invalid_client"), NO_STORE_HEADER
)
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


def _token_call(summary: str, body: type[Body], unauthorized: Schema) -> Operation:
    """Login and refresh: the tokens, the refresh token in the body or the cookie."""
    return Operation(
        FIRST_PARTY,
        summary,
        {
            "200": json_answer(
                "The tokens; for a cookie-delivery client the refresh token is only in "
                f"the `{REFRESH_COOKIE}` cookie.",
                TOKEN_RESPONSE,
                {**NO_STORE_HEADER, **SETS_REFRESH_COOKIE, **DPOP_NONCE},
            ),
            "401": unauthorized,
            "403": CROSS_SITE,
            **failures(
                "invalid_request",
                "invalid_grant",
                "invalid_scope",
                "unauthorized_client",
                *DPOP_ERRORS,
            ),
        },
        parameters=[*COOKIE_PARAMETERS, DPOP_PARAMETER],
        body=json_body(schema_of(body, ClientFields)),
    )


# The endpoints


@described(
    post=_token_call(
        "Log in with a username and password",
        LoginFields,
        json_answer(
            "`invalid_grant`: wrong username or password, or a disabled user (one "
            "answer for all); `invalid_client`: client authentication failed.",
            error("invalid_grant", "invalid_client"),
            NO_STORE_HEADER,
        ),
    )
)
async def login(request: Request, engine: Engine) -> Response:
    await limit_login_address(engine, request)
    data = await _json(request)
    # The same admission as every other endpoint that authenticates a client: a wrong
    # secret here spends the one failure count of that id at this address.
    admission = await admit_client(engine, request, _credentials(data))
    key = await proof_key(request, engine)
    client = await _admitted_client(admission, engine, data)
    if client.delivery is Delivery.COOKIE:
        _check_cross_site(request, client)
    body = parse(LoginFields, data)
    # This client's own cookie only: another app's cookie on this host may hold another
    # user's session, which this login must not end.
    previous = (
        request.cookies.get(refresh_cookie(client.id))
        if client.delivery is Delivery.COOKIE
        else None
    )
    previous = previous or body.previous_refresh_token
    issued = await engine.login.login(
        body.username,
        body.password,
        client,
        scope=parse_scope(body.scope),
        device_name=body.device_name,
        previous_refresh_token=previous,
        context=request_context(request),
        key_thumbprint=key,
    )
    return with_nonce(_answer(issued, client), engine, key)


@described(
    post=_token_call(
        f"Rotate the refresh token (body, or the cookie with {CSRF_HEADER})",
        RefreshFields,
        CLIENT_REFUSED,
    )
)
async def refresh(request: Request, engine: Engine) -> Response:
    data = await _json(request)
    admission = await admit_client(engine, request, _credentials(data))
    # Checked before the refresh token is read: a nonce challenge consumes nothing.
    key = await proof_key(request, engine)
    client = await _admitted_client(admission, engine, data)
    body = parse(RefreshFields, data)
    token = _presented_refresh_token(request, body.refresh_token, client)
    scope = parse_scope(body.scope)
    issued = await engine.refresher.refresh(token, client, scope, request_context(request), key)
    return with_nonce(_answer(issued, client), engine, key)


@described(
    post=Operation(
        FIRST_PARTY,
        "End this session; clears the cookie",
        {
            "204": {
                "description": "Ended, or nothing left to end (a dead or foreign "
                "token, or no cookie).",
                "headers": {**NO_STORE_HEADER, **CLEARS_REFRESH_COOKIE},
            },
            "401": CLIENT_REFUSED,
            "403": json_answer("Cross-site request refused.", error("invalid_request")),
            **failures("invalid_request"),
        },
        parameters=COOKIE_PARAMETERS,
        body=json_body(schema_of(LogoutFields, ClientFields)),
    )
)
async def logout(request: Request, engine: Engine) -> Response:
    data = await _json(request)
    admission = await admit_client(engine, request, _credentials(data))
    client = await _admitted_client(admission, engine, data)
    try:
        token = _presented_refresh_token(request, parse(LogoutFields, data).refresh_token, client)
    except InvalidRequest as missing:
        if isinstance(missing, CrossSiteRefused) or client.delivery is Delivery.BODY:
            raise
        token = None  # no cookie: already logged out, nothing to end
    if token is not None:
        # A dead, garbage or foreign token: nothing of this client's is left to end, and
        # the purpose of the request is achieved. A failing store still answers 503.
        with contextlib.suppress(InvalidGrant):
            await engine.sessions.logout(token, client, request_context(request))
    response = Response(status_code=204, headers=dict(NO_STORE))
    if client.delivery is Delivery.COOKIE:
        _clear_cookie(response, client.id)
    return response


@described(
    post=bearer_call(
        "End every session of this user",
        {
            "204": {
                "description": "Every session ended; the refresh cookie cleared.",
                "headers": {
                    **NO_STORE_HEADER,
                    "Set-Cookie": {**CLEARS_REFRESH_COOKIE["Set-Cookie"], "required": True},
                },
            }
        },
    )
)
async def logout_all(request: Request, engine: Engine) -> Response:
    session = await current_session(request, engine)
    await engine.sessions.end_all(session.user_id, context=request_context(request))
    response = Response(status_code=204, headers=dict(NO_STORE))
    # The calling client's cookie only: another app's cookie on this host may belong to
    # another user, whose session this call did not end.
    _clear_cookie(response, session.client_id)
    return response


@described(
    get=bearer_call(
        "This user's live sessions",
        {"200": json_answer("The sessions.", {"type": "array", "items": SESSION}, NO_STORE_HEADER)},
    )
)
async def list_sessions(request: Request, engine: Engine) -> Response:
    current = await current_session(request, engine)
    found = await engine.sessions.list_for(current.user_id)
    return json_response(
        [
            {
                "sid": s.id,
                "client_id": s.client_id,
                "device": {
                    "name": s.device.name,
                    "user_agent": s.device.user_agent,
                    "ip": s.device.ip,
                },
                "created_at": s.created_at.isoformat(),
                "last_used_at": s.last_used_at.isoformat(),
                "current": s.id == current.id,
            }
            for s in found
        ],
        headers=dict(NO_STORE),
    )


@described(
    delete=bearer_call(
        "End one of this user's sessions",
        NO_CONTENT,
        parameters=[sid_parameter()],
        **{"404": json_answer("No such session of this user.", error("not_found"))},
    )
)
async def end_session(request: Request, engine: Engine) -> Response:
    current = await current_session(request, engine)
    sid = request.path_params["sid"]
    if not isinstance(sid, str) or len(sid) > 64 or "\x00" in sid:
        raise InvalidRequest("Malformed session id.")
    await engine.sessions.end_by_id(
        sid,  # type: ignore[arg-type]
        RevocationReason.LOGOUT,
        owner=current.user_id,
        context=request_context(request),
    )
    return Response(status_code=204, headers=dict(NO_STORE))


@described(
    post=bearer_call(
        "Change the password: this session stays, every other one ends",
        {"200": json_answer("Changed.", schema_of(PasswordChanged), NO_STORE_HEADER)},
        json_body(schema_of(PasswordChange)),
        unauthorized=json_answer(
            "`invalid_token` (with `WWW-Authenticate`) for the bearer token, "
            "`invalid_grant` for a wrong current password.",
            error("invalid_token", "invalid_grant"),
            {**NO_STORE_HEADER, "WWW-Authenticate": {"schema": {"type": "string"}}},
        ),
    )
)
async def change_password(request: Request, engine: Engine) -> Response:
    # A password guess like a login's: the same per-address limit (the per-account
    # lockout is `Sessions.change_password`'s).
    await limit_login_address(engine, request)
    current = await current_session(request, engine)
    data = await _json(request)
    body = parse(PasswordChange, data)
    ended = await engine.sessions.change_password(
        current.user_id,
        body.current_password,
        body.new_password,
        keep=current.id,
        context=request_context(request),
    )
    changed: PasswordChanged = {"sessions_ended": len(ended)}
    return json_response(changed, headers=dict(NO_STORE))
