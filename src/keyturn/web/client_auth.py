"""Client authentication at the token, revocation and introspection endpoints: the
credentials a request presents (RFC 6749 §2.3.1, OAuth 2.1 §2.4.1), and the step that
authenticates the client of a form-encoded request.

`client_secret_basic`: `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`,
both parts form-urlencoded before the Basic encoding (App. B), which many clients get
wrong in one direction or the other: we decode exactly as the RFC says.
`client_secret_post`: `client_id` and `client_secret` in the form. `none`: `client_id`
alone (a public client). Using two methods at once is `invalid_request`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from urllib.parse import unquote_plus

from starlette.requests import Request

from keyturn.core.errors import InvalidClient, InvalidRequest
from keyturn.core.models import Client
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from keyturn.service.engine import Engine
from keyturn.web.errors import UnsupportedAuthScheme
from keyturn.web.limits import admit_client

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
MAX_AUTHORIZATION = 1024


def _form_decode(text: str) -> str:
    if _BAD_PERCENT.search(text):
        raise InvalidRequest("The Basic credentials are not form-urlencoded.")
    try:
        value = unquote_plus(text, errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequest("The Basic credentials are not UTF-8.") from None
    if "\x00" in value:
        raise InvalidRequest("The Basic credentials contain a NUL character.")
    return value


def from_basic(header: str) -> tuple[str, str]:
    """The client id and secret of a Basic Authorization header."""
    if len(header) > MAX_AUTHORIZATION:
        raise InvalidRequest("The Authorization header is too long.")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise UnsupportedAuthScheme(detail=f"Authorization scheme {scheme[:20]!r}")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidRequest("The Basic credentials are not valid base64.") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise InvalidRequest("The Basic credentials lack the ':' separator.")
    return _form_decode(client_id), _form_decode(secret)


def presented_credentials(authorization: str | None, form: Mapping[str, str]) -> ClientCredentials:
    """The credentials a request presents, by whichever one method."""
    form_id = form.get("client_id")
    form_secret = form.get("client_secret")
    if authorization:
        if form_secret is not None:
            raise InvalidRequest("Use one client authentication method, not two.")
        client_id, secret = from_basic(authorization)
        if form_id is not None and form_id != client_id:
            raise InvalidRequest("The client_id does not match the Authorization header.")
        return ClientCredentials(client_id, secret, AuthMethod.BASIC)
    if form_id is None:
        raise InvalidClient(detail="no client authentication")
    if form_secret is not None:
        return ClientCredentials(form_id, form_secret, AuthMethod.POST)
    return ClientCredentials(form_id, None, AuthMethod.NONE)


async def authenticated_client(request: Request, engine: Engine, form: Mapping[str, str]) -> Client:
    """The client of a form request, authenticated first (RFC 7009 §2.1, RFC 7662
    §2.1), within the limits this caller may spend (`web.limits`)."""
    credentials = presented_credentials(request.headers.get("authorization"), form)
    admission = await admit_client(engine, request, credentials)
    async with admission.authenticating():
        return await engine.clients.authenticate(credentials)
