"""GET /auth/revocations: the revocation feed, for resource servers (clients registered
with `--introspect`), authenticated with HTTP Basic like the token endpoint.

    GET /auth/revocations?since=CURSOR&limit=N
    {"revocations": [{"sid": "...", "revoked_at": 1767225600, "forget_after": 1767226500}],
     "cursor": "...", "more": false}
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyturn.core.errors import InvalidClient, InvalidRequest
from keyturn.service.engine import Engine
from keyturn.service.revocation_feed import MAX_PAGE
from keyturn.web.client_auth import presented_credentials
from keyturn.web.errors import NO_STORE
from keyturn.web.limits import Work, admit_client
from keyturn.web.operation import (
    CLIENT_401,
    NO_STORE_HEADER,
    RESOURCE_SERVERS,
    Operation,
    described,
    failures,
    json_answer,
)
from keyturn.web.responses import json_response

_PARAMETERS = frozenset({"since", "limit"})
PAGE = {
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
}


@described(
    get=Operation(
        RESOURCE_SERVERS,
        "The revocation feed: sessions ended since a cursor",
        {
            "200": json_answer(
                "Revoked sessions in order, and where to continue.", PAGE, NO_STORE_HEADER
            ),
            **failures("invalid_request", unauthorized=CLIENT_401),
        },
        parameters=[
            {"name": "since", "in": "query", "required": False, "schema": {"type": "string"}},
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
            },
        ],
        security=[{"clientBasic": []}],
    )
)
async def revocations(request: Request, engine: Engine) -> Response:
    header = request.headers.get("authorization")
    if header is None:
        raise InvalidClient("Authenticate with HTTP Basic.")
    credentials = presented_credentials(header, {})
    # A count of its own, spent only once the resource server has authenticated: no
    # caller without its secret can hold back the revocations its API must apply.
    admission = await admit_client(engine, request, credentials, Work.FEED)
    async with admission.authenticating():
        client = await engine.clients.authenticate(credentials)
    query = request.query_params
    if set(query.keys()) - _PARAMETERS or any(len(query.getlist(k)) > 1 for k in query):
        raise InvalidRequest("Only since and limit, once each.")
    limit_text = query.get("limit", str(MAX_PAGE))
    # ASCII digits only: `isdigit` alone takes "³", which `int` refuses.
    if not (limit_text.isascii() and limit_text.isdigit()) or len(limit_text) > 5:
        raise InvalidRequest(f"limit is a number from 1 to {MAX_PAGE}.")
    page = await engine.revocation_feed.page(client, query.get("since") or None, int(limit_text))
    return json_response(
        {
            "revocations": [
                {
                    "sid": item.session_id,
                    "revoked_at": int(item.revoked_at.timestamp()),
                    "forget_after": int(item.forget_after.timestamp()) + 1,
                }
                for item in page.items
            ],
            "cursor": page.cursor,
            "more": page.more,
        },
        headers=dict(NO_STORE),
    )
