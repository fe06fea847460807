"""What an endpoint says of itself in the API description: its summary, tag, inputs and
every answer it can give, declared beside its handler with `@described(...)`.

`web.openapi` walks the application's routes and reads these declarations, so a route
without one, or a declaration for a method the route does not take, cannot go unseen.
The answers every endpoint shares (the RFC 6749 §5.2 error, 413, 429, 503, the bearer
and client refusals) are built here, once, from the constants the code uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from keyturn.web.errors import DESCRIPTION_CHARACTERS, NO_STORE
from keyturn.web.forms import FORM, JSON, MAX_BODY

Schema = dict[str, Any]

OAUTH, FIRST_PARTY, DISCOVERY = "OAuth 2.1", "First-party API", "Discovery"
RESOURCE_SERVERS, OPERATIONS, BROWSER = "Resource servers", "Operations", "Browser client"
TAGS = (DISCOVERY, OAUTH, FIRST_PARTY, RESOURCE_SERVERS, OPERATIONS, BROWSER)
"""The description's sections, in the order a reader meets them."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One method of one path, as OpenAPI 3.1 describes it."""

    tag: str
    summary: str
    responses: Mapping[str, Schema]
    description: str | None = None
    parameters: Sequence[Schema] = ()
    body: Schema | None = None
    security: Sequence[Schema] | None = None

    def as_openapi(self) -> Schema:
        described: Schema = {"tags": [self.tag], "summary": self.summary}
        if self.description is not None:
            described["description"] = self.description
        if self.security is not None:
            described["security"] = list(self.security)
        if self.parameters:
            described["parameters"] = list(self.parameters)
        if self.body is not None:
            described["requestBody"] = self.body
        described["responses"] = dict(self.responses)
        return described


_H = TypeVar("_H", bound=Callable[..., Any])


def described(**by_method: Operation) -> Callable[[_H], _H]:
    """Attach the operations of a handler, by lower-case method (`get=`, `post=`)."""

    def attach(handler: _H) -> _H:
        handler.operations = by_method  # type: ignore[attr-defined]
        return handler

    return attach


def operations_of(handler: Callable[..., Any]) -> Mapping[str, Operation] | None:
    """What `described` attached to `handler` (kept by `web.app.endpoint`'s wrapper)."""
    found: Mapping[str, Operation] | None = getattr(handler, "operations", None)
    return found


# Answers and their parts


def error(*codes: str) -> Schema:
    """RFC 6749 §5.2: `{"error", "error_description"}` with the codes one answer may use."""
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "enum": sorted(set(codes))},
            "error_description": {"type": "string", "pattern": f"^[{DESCRIPTION_CHARACTERS}]*$"},
        },
        "additionalProperties": False,
    }


NO_STORE_HEADER = {
    "Cache-Control": {"schema": {"type": "string", "const": NO_STORE["Cache-Control"]}}
}
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
DPOP_ERRORS = ("invalid_dpop_proof", "use_dpop_nonce")
DPOP_NONCE = {
    "DPoP-Nonce": {
        "description": "RFC 9449 §8: the nonce the next DPoP proof must carry; on a "
        "`use_dpop_nonce` refusal and on the answers to requests made with a proof.",
        "schema": {"type": "string"},
    }
}
CLIENT_BASIC: list[Schema] = [{}, {"clientBasic": []}]
BODY_LIMIT = f"{MAX_BODY // 1024} KiB"


def cached(max_age: int) -> Schema:
    value = f"max-age={max_age}"
    return {"Cache-Control": {"required": True, "schema": {"type": "string", "const": value}}}


def json_answer(description: str, schema: Schema, headers: Schema | None = None) -> Schema:
    return _answer(description, JSON, schema, headers)


def html_answer(description: str, headers: Schema | None = None) -> Schema:
    return _answer(description, "text/html", {"type": "string"}, headers)


def text_answer(description: str, media_type: str) -> Schema:
    return _answer(description, media_type, {"type": "string"}, None)


def _answer(description: str, media_type: str, schema: Schema, headers: Schema | None) -> Schema:
    answer: Schema = {"description": description, "content": {media_type: {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def status_answer(description: str, word: str) -> Schema:
    """`{"status": word}`: the health endpoints."""
    return json_answer(
        description,
        {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": word}},
            "additionalProperties": False,
        },
    )


UNAVAILABLE = json_answer(
    "The database did not answer in time: nothing was issued or changed.",
    error("temporarily_unavailable"),
    {**NO_STORE_HEADER, **RETRY_AFTER},
)


def failures(*codes400: str, unauthorized: Schema | None = None) -> dict[str, Schema]:
    """What every API endpoint may answer besides success: 400 with `codes400`, 413 for
    a body over `MAX_BODY`, 429 when rate-limited, 503 when the database does not answer."""
    answers: dict[str, Schema] = {}
    if codes400:
        answers["400"] = json_answer("Refused (RFC 6749 §5.2).", error(*codes400), NO_STORE_HEADER)
    if unauthorized is not None:
        answers["401"] = unauthorized
    answers["413"] = json_answer(f"The body is larger than {BODY_LIMIT}.", error("invalid_request"))
    answers["429"] = json_answer(
        "Over a rate limit; retry after the given seconds.",
        error("rate_limited"),
        {**NO_STORE_HEADER, **RETRY_AFTER},
    )
    answers["503"] = UNAVAILABLE
    return answers


CLIENT_401 = json_answer(
    "Client authentication failed.", error("invalid_client"), {**NO_STORE_HEADER, **BASIC}
)
BEARER_401 = json_answer(
    "The access token is missing, invalid, expired or of an ended session; or, for a "
    "DPoP-bound token (`Authorization: DPoP`), its proof is missing or invalid, or "
    "lacks the nonce (`DPoP-Nonce` header, RFC 9449 §7.1, §9).",
    error("invalid_token", *DPOP_ERRORS),
    {**NO_STORE_HEADER, **BEARER, **DPOP_NONCE},
)


TOKEN_CHARS = {"type": "string", "maxLength": 8192}
CLIENT_FIELDS = {
    "client_id": {"type": "string", "description": "For client_secret_post and public clients."},
    "client_secret": {"type": "string", "description": "client_secret_post only."},
}
"""A form's client authentication (RFC 6749 §2.3.1): token, revocation, introspection."""


def inspection(summary: str, description: str, ok: Schema) -> Operation:
    """Revocation and introspection: a `token` in the form, the client authenticated."""
    return Operation(
        OAUTH,
        summary,
        {"200": ok, **failures("invalid_request", unauthorized=CLIENT_401)},
        description=description,
        security=CLIENT_BASIC,
        body=form_body(
            {"token": TOKEN_CHARS, "token_type_hint": {"type": "string"}, **CLIENT_FIELDS},
            ["token"],
        ),
    )


def form_body(properties: Schema, required: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": True, "content": {FORM: {"schema": schema}}}


def json_body(schema: Schema) -> Schema:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def bearer_call(
    summary: str,
    ok: Mapping[str, Schema],
    body: Schema | None = None,
    unauthorized: Schema | None = None,
    parameters: Sequence[Schema] = (),
    **extra: Schema,
) -> Operation:
    """A first-party call made with the user's access token (Bearer or DPoP-bound)."""
    return Operation(
        FIRST_PARTY,
        summary,
        {
            **ok,
            # RFC 6750 §3.1: a good token whose client may not act on the account.
            "403": json_answer(
                "The token's client may not act on the account: it needs the "
                "`keyturn:account` scope, or a first-party login client.",
                error("insufficient_scope"),
                {**NO_STORE_HEADER, **BEARER},
            ),
            **extra,
            **failures("invalid_request", unauthorized=unauthorized or BEARER_401),
        },
        parameters=parameters,
        body=body,
        security=[{"bearer": []}, {"dpop": []}],
    )


def sid_parameter() -> Schema:
    return {"name": "sid", "in": "path", "required": True, "schema": {"type": "string"}}


NO_CONTENT = {"204": {"description": "Done.", "headers": NO_STORE_HEADER}}
