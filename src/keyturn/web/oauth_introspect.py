"""POST /oauth/introspect (RFC 7662)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyturn.service.engine import Engine
from keyturn.web.client_auth import authenticated_client
from keyturn.web.errors import NO_STORE
from keyturn.web.forms import read_oauth_form, token_parameter
from keyturn.web.operation import NO_STORE_HEADER, Schema, described, inspection, json_answer
from keyturn.web.responses import json_response

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


@described(
    post=inspection(
        "Introspection (RFC 7662)",
        "Only a confidential client is answered: a public client, whose "
        "`client_id` anyone can send, gets `invalid_client` (401) whatever the "
        "token (§2.1, §4). A client learns the state of its own tokens; one "
        "registered to introspect (a resource server) also of any access token. "
        "Any other token (another client's, unknown, rotated or ended) is "
        '`{"active": false}`, the same as garbage.',
        json_answer("The token's state.", INTROSPECTION, NO_STORE_HEADER),
    )
)
async def introspect(request: Request, engine: Engine) -> Response:
    form = await read_oauth_form(request)
    client = await authenticated_client(request, engine, form)
    # A public client is refused before its token is even looked for: one answer,
    # whatever it sent (RFC 7662 §4).
    engine.inspection.authorize_introspection(client)
    answer = await engine.inspection.introspect(token_parameter(form), client)
    return json_response(answer, headers=dict(NO_STORE))
