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
from keyturn.web.responses import token_response


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
