"""The authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3), checked before any login.

Pure rules. Which failures go back to the client and which stay with the user follows
RFC 6749 §4.1.2.1: when the client is unknown or the redirect URI does not match, the
server "MUST NOT automatically redirect the user-agent to the invalid redirection URI"
(that would make it an open redirector); every later failure is redirected back with
`error`, `error_description` and the client's `state`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keyturn.core.errors import (
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    KeyturnError,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from keyturn.core.models import Client, GrantType
from keyturn.core.scopes import Scope, format_scope, narrow, parse_scope

Params = Mapping[str, Sequence[str]]
"""Query or form parameters, each with every value it was given."""

AUTHORIZATION_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
)
MAX_STATE_LENGTH = 2048
MAX_PARAMETER_LENGTH = 4096

# RFC 7636 §4.2: code_challenge = BASE64URL(SHA256(code_verifier)), 43 characters; §4.1:
# the verifier is 43 to 128 unreserved characters.
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]"})


class AuthorizationRefused(Exception):
    """An authorization request refused. With a `redirect_uri`, the refusal goes back
    to the client there (with `state`); without one, only the user may be told."""

    def __init__(
        self, error: KeyturnError, redirect_uri: str | None = None, state: str | None = None
    ) -> None:
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state
        super().__init__(str(error))


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A request that passed every check: what the login form carries and a code keeps."""

    client: Client
    redirect_uri: str
    redirect_uri_given: bool
    scope: Scope
    state: str | None
    code_challenge: str

    def form_fields(self) -> dict[str, str]:
        """The request as the login form's hidden fields, to be checked again on post."""
        fields = {
            "response_type": "code",
            "client_id": self.client.id,
            "scope": format_scope(self.scope),
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }
        if self.redirect_uri_given:
            fields["redirect_uri"] = self.redirect_uri
        if self.state is not None:
            fields["state"] = self.state
        return fields


def single(params: Params, name: str) -> str | None:
    """The one value of `name`, or `None`; RFC 6749 §3.1: parameters "MUST NOT be
    included more than once"."""
    values = params.get(name, ())
    if len(values) > 1:
        raise InvalidRequest(f"The {name} parameter is repeated.")
    if not values or values[0] == "":
        return None
    if len(values[0]) > MAX_PARAMETER_LENGTH:
        raise InvalidRequest(f"The {name} parameter is too long.")
    return values[0]


def redirect_uri_matches(registered: str, presented: str) -> bool:
    """Exact string comparison (OAuth 2.1 §2.3.1, RFC 9700 §4.1.3), except that the port
    of a loopback IP redirect URI may vary, as native apps pick one at run time (RFC
    8252 §7.3)."""
    if presented == registered:
        return True
    want, got = urlsplit(registered), urlsplit(presented)
    if want.scheme != "http" or want.hostname is None:
        return False
    host = f"[{want.hostname}]" if ":" in want.hostname else want.hostname
    if host not in _LOOPBACK_HOSTS:
        return False
    try:
        got.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return (
        got.scheme == want.scheme
        and got.hostname == want.hostname
        and got.path == want.path
        and got.query == want.query
        and got.fragment == want.fragment
        and got.username is None
        and got.password is None
    )


def redirect_uri_problem(uri: str) -> str | None:
    """Why `uri` cannot be registered as a redirect URI, or `None` (OAuth 2.1 §2.3.1,
    RFC 8252 §7): absolute, no fragment, and either HTTPS, HTTP on a loopback address,
    or a private-use scheme of a native app."""
    if len(uri) > MAX_PARAMETER_LENGTH or not uri.isprintable() or " " in uri:
        return "it must be a printable URI without spaces"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "it is not a valid URI"
    if not parts.scheme:
        return "it must be absolute"
    if "#" in uri:
        return "it must not have a fragment"
    if parts.scheme == "https":
        return None if parts.hostname else "it needs a host"
    if parts.scheme == "http":
        if parts.hostname in ("127.0.0.1", "::1", "localhost"):
            return None
        return "plain http is allowed only on a loopback address"
    if "." in parts.scheme and not parts.netloc:
        return None  # a private-use scheme such as com.example.app:/callback
    return "use https, http on loopback, or a reverse-domain private-use scheme"


def client_and_redirect(params: Params, client: Client | None) -> tuple[Client, str, bool]:
    """The client and the redirect URI to answer at: `(client, uri, uri_given)`.

    Every failure here is for the user's eyes only (never redirected)."""
    try:
        client_id = single(params, "client_id")
        redirect_uri = single(params, "redirect_uri")
    except InvalidRequest as error:
        raise AuthorizationRefused(error) from None
    if client_id is None:
        raise AuthorizationRefused(InvalidRequest("The client_id parameter is required."))
    if client is None or not client.enabled:
        raise AuthorizationRefused(InvalidClient("This application is not known here."))
    if redirect_uri is None:
        if len(client.redirect_uris) != 1:
            raise AuthorizationRefused(
                InvalidRequest("The redirect_uri parameter is required for this client.")
            )
        return client, client.redirect_uris[0], False
    if not any(redirect_uri_matches(r, redirect_uri) for r in client.redirect_uris):
        raise AuthorizationRefused(
            InvalidRequest("The redirect_uri is not registered for this client.")
        )
    return client, redirect_uri, True


def check_authorization_request(params: Params, client: Client | None) -> AuthorizationRequest:
    """Check an authorization request for `client` (looked up by its `client_id`).

    Raises `AuthorizationRefused`: without a redirect URI for an unknown client or an
    unregistered redirect URI, with one for everything else (RFC 6749 §4.1.2.1).
    """
    client, redirect_uri, given = client_and_redirect(params, client)
    try:
        state = single(params, "state")
    except InvalidRequest as error:
        raise AuthorizationRefused(error, redirect_uri) from None
    if state is not None and len(state) > MAX_STATE_LENGTH:
        raise AuthorizationRefused(InvalidRequest("The state is too long."), redirect_uri)
    try:
        for name in AUTHORIZATION_PARAMETERS:
            single(params, name)
        scope = _check(params, client)
    except KeyturnError as error:
        raise AuthorizationRefused(error, redirect_uri, state) from None
    challenge = single(params, "code_challenge") or ""
    return AuthorizationRequest(client, redirect_uri, given, scope, state, challenge)


def _check(params: Params, client: Client) -> Scope:
    response_type = single(params, "response_type")
    if response_type is None:
        raise InvalidRequest("The response_type parameter is required.")
    if response_type != "code":
        raise UnsupportedResponseType
    # OAuth 2.0 Multiple Response Type Encoding Practices §2.1: the code goes back in
    # the query, `code`'s default mode. A client that asked for `form_post`,
    # `fragment` or a JARM mode would look for it elsewhere and miss it, so it is told
    # (in the query, the one mode it will be answered in).
    if single(params, "response_mode") not in (None, "query"):
        raise InvalidRequest("Unsupported response_mode: only query is supported.")
    if GrantType.AUTHORIZATION_CODE not in client.grant_types:
        raise UnauthorizedClient("This client may not use the authorization code grant.")
    challenge = single(params, "code_challenge")
    if challenge is None:
        # OAuth 2.1 §4.1.1: PKCE is required of every client.
        raise InvalidRequest("The code_challenge parameter is required (PKCE, RFC 7636).")
    # RFC 7636 §4.4.1: an absent method means "plain", which is refused here like any
    # other unsupported transform (RFC 9700 §2.1.1).
    if single(params, "code_challenge_method") != "S256":
        raise InvalidRequest("Transform algorithm not supported: use code_challenge_method=S256.")
    if not _CHALLENGE.fullmatch(challenge):
        raise InvalidRequest("The code_challenge is not a base64url SHA-256 digest.")
    granted = narrow(client.scope, parse_scope(single(params, "scope")))
    if granted is None:
        raise InvalidScope("The requested scope is not allowed for this client.")
    return granted


def with_query(uri: str, values: Mapping[str, str | None]) -> str:
    """`uri` with `values` added to its query, keeping the query it already has (RFC
    6749 §3.1.2: the redirection endpoint's query "MUST be retained")."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in values.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))
