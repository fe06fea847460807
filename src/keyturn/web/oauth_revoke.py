"""POST /oauth/revoke (RFC 7009)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyturn.service.engine import Engine
from keyturn.web.client_auth import authenticated_client
from keyturn.web.context import request_context
from keyturn.web.errors import NO_STORE
from keyturn.web.forms import read_oauth_form, token_parameter
from keyturn.web.operation import NO_STORE_HEADER, described, inspection


@described(
    post=inspection(
        "Revocation (RFC 7009): ends the token's session",
        "The client authenticates first (§2.1). A refresh or access token of the "
        "calling client ends its whole session; an unknown, malformed or expired "
        "token succeeds silently (§2.2). A token of another client stays live: a "
        "confidential caller is answered `invalid_request`, a public one 200. "
        "`token_type_hint` is accepted and not needed.",
        {"description": "Revoked, or nothing to revoke (§2.2).", "headers": NO_STORE_HEADER},
    )
)
async def revoke(request: Request, engine: Engine) -> Response:
    form = await read_oauth_form(request)
    client = await authenticated_client(request, engine, form)
    await engine.inspection.revoke(token_parameter(form), client, request_context(request))
    # RFC 7009 §2.2: 200 whether or not the token was valid; the body is ignored.
    return Response(status_code=200, headers=dict(NO_STORE))
