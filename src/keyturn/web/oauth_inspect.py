"""POST /oauth/revoke (RFC 7009) and POST /oauth/introspect (RFC 7662)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyturn.core.errors import InvalidRequest
from keyturn.core.models import Client
from keyturn.web.client_credentials import client_credentials
from keyturn.web.context import request_context
from keyturn.web.errors import NO_STORE
from keyturn.web.forms import parse_form, read_limited
from keyturn.web.limits import admit_client
from keyturn.web.responses import json_response
from keyturn.wiring import Engine


async def _authenticated(request: Request, engine: Engine) -> tuple[Client, dict[str, str]]:
    if request.scope.get("query_string"):
        raise InvalidRequest("Send the parameters in the form-encoded body, not the URL.")
    body = await read_limited(request.stream(), request.headers.get("content-length"))
    form = parse_form(request.headers.get("content-type"), body)
    # RFC 7009 §2.1, RFC 7662 §2.1: the client is authenticated first.
    credentials = client_credentials(request.headers.get("authorization"), form)
    admission = await admit_client(engine, request, credentials)
    async with admission.authenticating():
        return await engine.clients.authenticate(credentials), form


def _token(form: dict[str, str]) -> str:
    token = form.get("token")
    if token is None:
        raise InvalidRequest("The token parameter is required.")
    return token


async def revoke(request: Request, engine: Engine) -> Response:
    client, form = await _authenticated(request, engine)
    await engine.inspection.revoke(_token(form), client, request_context(request))
    # RFC 7009 §2.2: 200 whether or not the token was valid; the body is ignored.
    return Response(status_code=200, headers=dict(NO_STORE))


async def introspect(request: Request, engine: Engine) -> Response:
    client, form = await _authenticated(request, engine)
    # A public client is refused before its token is even looked for: one answer,
    # whatever it sent (RFC 7662 §4).
    engine.inspection.authorize_introspection(client)
    answer = await engine.inspection.introspect(_token(form), client)
    return json_response(answer, headers=dict(NO_STORE))
