"""POST /oauth/introspect (RFC 7662)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyturn.service.engine import Engine
from keyturn.web.client_auth import authenticated_client
from keyturn.web.errors import NO_STORE
from keyturn.web.forms import read_oauth_form, token_parameter
from keyturn.web.responses import json_response


async def introspect(request: Request, engine: Engine) -> Response:
    form = await read_oauth_form(request)
    client = await authenticated_client(request, engine, form)
    # A public client is refused before its token is even looked for: one answer,
    # whatever it sent (RFC 7662 §4).
    engine.inspection.authorize_introspection(client)
    answer = await engine.inspection.introspect(token_parameter(form), client)
    return json_response(answer, headers=dict(NO_STORE))
