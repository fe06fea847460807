"""What a client registration may not be: pure rules, one place for every path that
registers or changes a client (`keyturn clients add`, `clients update`, the demo).

`docs/decisions/codes-and-registration.md` has the reasoning.
"""

from __future__ import annotations

import re

from keyturn.core.authorization import redirect_uri_problem
from keyturn.core.ids import is_user_id_shaped
from keyturn.core.models import Client, ClientType, GrantType, Lifetimes

MAX_CLIENT_ID_LENGTH = 128
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})

# The ASCII serialization of a tuple origin (RFC 6454 §6.2, WHATWG URL "serialize an
# origin"): what a browser sends in `Origin`, so the only spelling that can ever match.
_ORIGIN = re.compile(
    r"(?P<scheme>https?)://"
    r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?"
)
_DEFAULT_PORTS = {"https": 443, "http": 80}


def origin_problem(origin: str) -> str | None:
    """Why `origin` cannot be an allowed browser origin, or `None`.

    An allowed origin is granted credentialed CORS and passes the cookie endpoints'
    CSRF `Origin` check. `null` is what sandboxed frames, `data:` pages and some
    redirects send, so it names anyone; `*` cannot go with credentials (Fetch §3.2.5).
    Only the serialized form is accepted (scheme://host[:port], lower case, no path or
    trailing slash, no default port): any other spelling never equals a browser's
    `Origin` and hides a mistake. Plain http only on loopback, where a developer runs
    a page; anywhere else the refresh cookie's page could be rewritten in transit.
    """
    found = _ORIGIN.fullmatch(origin)
    if found is None:
        return (
            "an allowed origin is scheme://host[:port] exactly as a browser sends it: "
            "lower case, no path, no trailing slash, never null or *"
        )
    scheme, host, port = found["scheme"], found["host"], found["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        return "its port is not between 1 and 65535"
    if port is not None and int(port) == _DEFAULT_PORTS[scheme]:
        return f"a browser omits the default port: write {scheme}://{host}"
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        return "plain http is allowed only on localhost, 127.0.0.1 or [::1]; use https"
    return None


def client_id_problem(client_id: str) -> str | None:
    """Why `client_id` cannot be registered, or `None`.

    RFC 9068 §5: a resource server must be able to tell a token issued for a user from
    one a client obtained for itself, whose `sub` is the client's id (§2.2). A user's
    `sub` is always a UUID (`keyturn.core.ids.UserId`), so no client id may be one, in
    any spelling a resource server might normalize to the same value.
    """
    if not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH or not client_id.isprintable():
        return f"a client id is 1 to {MAX_CLIENT_ID_LENGTH} printable characters"
    if is_user_id_shaped(client_id):
        return (
            "a client id may not be a UUID: user ids are, and a client's own tokens "
            "carry its id as their sub (RFC 9068 §5)"
        )
    return None


def registration_problem(client: Client, server: Lifetimes) -> str | None:
    """Why `client` cannot be registered (or kept, after a change) on a server whose
    lifetimes are `server`, or `None`. The first problem found, as one sentence."""
    problem = client_id_problem(client.id)
    if problem:
        return f"Client id {client.id!r} refused: {problem}."
    if client.type is ClientType.PUBLIC and GrantType.CLIENT_CREDENTIALS in client.grant_types:
        return "A public client cannot use client_credentials."
    if client.type is ClientType.PUBLIC and client.can_introspect:
        # RFC 7662 §2.1: the endpoint MUST require authorization; a public client is
        # authenticated by its id alone, which anyone can send (RFC 6749 §2.1, §10.1).
        return (
            "Introspection refused: only a confidential client may introspect (a public "
            "client is known by its id alone, which anyone can send)."
        )
    for uri in client.redirect_uris:
        problem = redirect_uri_problem(uri)
        if problem:
            return f"Redirect URI {uri!r} refused: {problem}."
    if GrantType.AUTHORIZATION_CODE in client.grant_types and not client.redirect_uris:
        return "The authorization_code grant needs a redirect URI."
    for origin in client.allowed_origins:
        problem = origin_problem(origin)
        if problem:
            return f"Allowed origin {origin!r} refused: {problem}."
    return lifetimes_problem(client, server)


def lifetimes_problem(client: Client, server: Lifetimes) -> str | None:
    """Why the client's own lifetimes cannot stand beside the server's, or `None`.

    Introspection (its `max_lifetime` check), the publication of retired signing keys
    and the revocation feed's retention are all sized by the server's access-token
    lifetime: a longer one of a client would outlive each of them. A row stored before
    this rule is clamped where tokens are issued (`EngineConfig.lifetimes_for`).
    """
    own = client.lifetimes.access_token_ttl
    if own is not None and own > server.access_token_ttl:
        return (
            f"An access-token lifetime of {own} s is above the server's "
            f"KEYTURN_ACCESS_TOKEN_TTL ({server.access_token_ttl} s)."
        )
    try:
        client.lifetimes.apply(server)
    except ValueError as error:
        return f"Lifetimes refused: {error}."
    return None
