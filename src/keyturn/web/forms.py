"""Reading request bodies strictly: RFC 6749 form bodies and the first-party JSON.

Everything malformed, oversized or hostile becomes `InvalidRequest` (or 413) here,
before any store or Argon2 work: wrong content type, a repeated parameter (§3.2), bytes
that are not UTF-8, NUL characters, over-deep or duplicate-key JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from keyturn.core import json_object
from keyturn.core.errors import InvalidRequest
from keyturn.core.storable import storable

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_BODY = 16 * 1024
"""Bodies larger than this are refused with 413 before they are read in full."""
MAX_FIELDS = 32


class BodyTooLarge(Exception):
    """The body exceeds `MAX_BODY`: answered 413."""


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """The media type (lower case) and its parameters; empty for a missing header."""
    if not content_type:
        return "", {}
    if content_type == FORM:  # what nearly every client sends, as it is
        return FORM, {}
    head, *rest = content_type.split(";")
    params: dict[str, str] = {}
    for part in rest:
        name, _, value = part.strip().partition("=")
        params[name.strip().lower()] = value.strip().strip('"').lower()
    return head.strip().lower(), params


async def read_limited(
    chunks: AsyncIterator[bytes], declared_length: str | None, limit: int = MAX_BODY
) -> bytes:
    """Read a body of at most `limit` bytes; `BodyTooLarge` as soon as it is known."""
    if declared_length is not None:
        try:
            if int(declared_length) > limit:
                raise BodyTooLarge
        except ValueError:
            raise InvalidRequest("The Content-Length header is invalid.") from None
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


async def read_oauth_form(request: Request) -> dict[str, str]:
    """The form of a request to an OAuth endpoint that clients authenticate at (token,
    revocation, introspection). OAuth 2.1 §2.4.1: credentials "MUST NOT be included in
    the request URI"; RFC 6749 §3.2: parameters travel in the form body. A query string
    is refused outright."""
    if request.scope.get("query_string"):
        raise InvalidRequest("Send the parameters in the form-encoded body, not the URL.")
    body = await read_limited(request.stream(), request.headers.get("content-length"))
    return parse_form(request.headers.get("content-type"), body)


def token_parameter(form: Mapping[str, str]) -> str:
    """The `token` parameter that revocation (RFC 7009 §2.1) and introspection (RFC 7662
    §2.1) require."""
    token = form.get("token")
    if token is None:
        raise InvalidRequest("The token parameter is required.")
    return token


def parse_form(content_type: str | None, body: bytes) -> dict[str, str]:
    """Parse an `application/x-www-form-urlencoded` body (RFC 6749 App. B).

    A parameter sent without a value is treated as omitted (§3.1); a parameter sent
    twice is an error (§3.2).
    """
    kind, params = media_type(content_type)
    if kind != FORM:
        raise InvalidRequest("The body must be application/x-www-form-urlencoded.")
    charset = params.get("charset")
    if charset not in (None, "utf-8"):
        raise InvalidRequest("The body must be UTF-8.")
    form: dict[str, str] = {}
    for name, values in parse_params(body).items():
        if len(values) > 1:
            raise InvalidRequest(f"The parameter {name} is repeated.")
        if values[0] != "":
            form[name] = values[0]
    return form


def parse_params(raw: bytes) -> dict[str, list[str]]:
    """URL-encoded parameters (a query or a form body) with every value each was given,
    so a repeat can be told apart; refuses what is not UTF-8 or holds a NUL, and more
    than `MAX_FIELDS` parameters."""
    # parse_qsl's own count (separators + 1) raises a ValueError that reads like bad
    # encoding: counted first, so the refusal says what is wrong.
    if raw.count(b"&") + 1 > MAX_FIELDS:
        raise InvalidRequest(f"Too many parameters: at most {MAX_FIELDS} are accepted.")
    try:
        pairs = parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The parameters are not valid URL-encoded UTF-8.") from None
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest("The parameters contain a NUL character.")
        params.setdefault(name, []).append(value)
    return params


def parse_json_object(content_type: str | None, body: bytes) -> dict[str, Any]:
    """Parse a JSON object body, refusing duplicate keys and pathological nesting."""
    kind, _ = media_type(content_type)
    if kind != JSON:
        raise InvalidRequest("The body must be application/json.")
    try:
        value = json_object.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest("The body is not a valid JSON object.") from None
    if not isinstance(value, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return value


def text_field(
    data: Mapping[str, Any], name: str, *, required: bool = True, max_length: int = 4096
) -> str | None:
    """A string member of a JSON body: present, a string, bounded, no NUL."""
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"The field {name} is required.")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"The field {name} must be a string.")
    if len(value) > max_length:
        raise InvalidRequest(f"The field {name} is too long.")
    if not storable(value):  # NUL, or a lone surrogate (JSON "\\ud800")
        raise InvalidRequest(f"The field {name} contains a forbidden character.")
    return value
