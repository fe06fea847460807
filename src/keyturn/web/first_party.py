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
from keyturn.web.forms import parse_json_object, read_limited, text_field
from keyturn.web.limits import Admission, admit_client, limit_login_address
from keyturn.web.responses import json_response, token_response

COOKIE_PREFIX = "__Host-keyturn_rt_"
CSRF_HEADER = "x-keyturn-csrf"


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
    client_id = text_field(data, "client_id", max_length=128) or ""
    secret = text_field(data, "client_secret", required=False, max_length=256)
    method = AuthMethod.POST if secret is not None else AuthMethod.NONE
    return ClientCredentials(client_id, secret, method)


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
    if request.headers.get(CSRF_HEADER) != "1":
        raise CrossSiteRefused(detail="missing CSRF header")
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise CrossSiteRefused(detail="cross-site fetch")
    origin = request.headers.get("origin")
    if origin is not None and origin not in client.allowed_origins:
        raise CrossSiteRefused(detail="foreign origin")


def _presented_refresh_token(request: Request, data: dict[str, Any], client: Client) -> str:
    """The refresh token of a refresh or logout: from the cookie (cookie clients, with
    the CSRF checks) or the body (body clients), never both."""
    in_body = text_field(data, "refresh_token", required=False)
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
    username = text_field(data, "username", max_length=256) or ""
    password = text_field(data, "password", max_length=4096) or ""
    device_name = text_field(data, "device_name", required=False, max_length=100)
    scope = parse_scope(text_field(data, "scope", required=False, max_length=1024))
    # This client's own cookie only: another app's cookie on this host may hold another
    # user's session, which this login must not end.
    previous = (
        request.cookies.get(refresh_cookie(client.id))
        if client.delivery is Delivery.COOKIE
        else None
    )
    previous = previous or text_field(data, "previous_refresh_token", required=False)
    issued = await engine.login.login(
        username,
        password,
        client,
        scope=scope,
        device_name=device_name,
        previous_refresh_token=previous,
        context=request_context(request),
        key_thumbprint=key,
    )
    return with_nonce(_answer(issued, client), engine, key)


async def refresh(request: Request, engine: Engine) -> Response:
    data = await _json(request)
    admission = await admit_client(engine, request, _credentials(data))
    # Checked before the refresh token is read: a nonce challenge consumes nothing.
    key = await proof_key(request, engine)
    client = await _admitted_client(admission, engine, data)
    token = _presented_refresh_token(request, data, client)
    scope = parse_scope(text_field(data, "scope", required=False, max_length=1024))
    issued = await engine.refresher.refresh(token, client, scope, request_context(request), key)
    return with_nonce(_answer(issued, client), engine, key)


async def logout(request: Request, engine: Engine) -> Response:
    data = await _json(request)
    admission = await admit_client(engine, request, _credentials(data))
    client = await _admitted_client(admission, engine, data)
    try:
        token = _presented_refresh_token(request, data, client)
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


async def logout_all(request: Request, engine: Engine) -> Response:
    session = await current_session(request, engine)
    await engine.sessions.end_all(session.user_id, context=request_context(request))
    response = Response(status_code=204, headers=dict(NO_STORE))
    # The calling client's cookie only: another app's cookie on this host may belong to
    # another user, whose session this call did not end.
    _clear_cookie(response, session.client_id)
    return response


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


async def change_password(request: Request, engine: Engine) -> Response:
    # A password guess like a login's: the same per-address limit (the per-account
    # lockout is `Sessions.change_password`'s).
    await limit_login_address(engine, request)
    current = await current_session(request, engine)
    data = await _json(request)
    old = text_field(data, "current_password", max_length=4096) or ""
    new = text_field(data, "new_password", max_length=4096) or ""
    ended = await engine.sessions.change_password(
        current.user_id, old, new, keep=current.id, context=request_context(request)
    )
    return json_response({"sessions_ended": len(ended)}, headers=dict(NO_STORE))
