"""Domain errors to HTTP, once, for both surfaces (RFC 6749 §5.2 shape).

Every error answers `{"error": code, "error_description": text}` with
`Cache-Control: no-store`. The description is the error's public text only, reduced to
the characters §5.2 allows; the detail (why a token was refused) goes to the log.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from keyturn.core import errors
from keyturn.core.dpop_errors import InvalidDpopProof, UseDpopNonce
from keyturn.service.inspection import InsufficientScope

DESCRIPTION_CHARACTERS = r"\x20\x21\x23-\x5b\x5d-\x7e"
"""RFC 6749 §5.2: error_description = 1*( %x20-21 / %x23-5B / %x5D-7E ), as a regular
expression's character class."""
_NOT_ALLOWED = re.compile(f"[^{DESCRIPTION_CHARACTERS}]")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

STATUS: dict[type[errors.KeyturnError], int] = {
    errors.KeyturnError: 500,
    errors.InvalidRequest: 400,
    errors.InvalidClient: 401,
    errors.InvalidGrant: 400,
    errors.UnauthorizedClient: 400,
    errors.UnsupportedGrantType: 400,
    errors.UnsupportedResponseType: 400,
    errors.InvalidScope: 400,
    errors.LoginFailed: 401,
    errors.PasswordRejected: 400,
    errors.InvalidToken: 401,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.RateLimited: 429,
    errors.StoreUnavailable: 503,
    errors.SigningUnavailable: 503,
    # RFC 9449 §5 and §8: a token request with a bad proof, or without the nonce.
    InvalidDpopProof: 400,
    UseDpopNonce: 400,
}
"""Each error class's status; a test proves every class in `errors.ALL_ERRORS` is here."""

RETRY_AFTER_UNAVAILABLE = 2


class CrossSiteRefused(errors.InvalidRequest):
    """A cookie-authenticated request without the CSRF proof or from a foreign origin:
    answered 403 `invalid_request`."""

    default_public = "Cross-site request refused."


STATUS[CrossSiteRefused] = 403


class ResourceProofRefused(InvalidDpopProof):
    """`InvalidDpopProof` at a first-party endpoint that takes a DPoP-bound access
    token: RFC 9449 §7.1 answers it 401 with a `DPoP` challenge."""


class ResourceNonceRequired(UseDpopNonce):
    """`UseDpopNonce` at a first-party endpoint that takes a DPoP-bound access token:
    401 with a `DPoP` challenge and the nonce (RFC 9449 §9)."""


STATUS[ResourceProofRefused] = 401
STATUS[ResourceNonceRequired] = 401


class UnsupportedAuthScheme(errors.InvalidClient):
    """An Authorization header in a scheme other than Basic where client credentials
    are read: 401 `invalid_client` with a Basic challenge, the one header scheme a
    client can authenticate with here (RFC 6749 §5.2)."""

    default_public = "Unsupported client authentication scheme: use Basic."


# RFC 6750 §3.1: a good token without the scope the resource needs.
STATUS[InsufficientScope] = 403


class DpopTokenRefused(errors.InvalidToken):
    """`InvalidToken` for a request made with the `DPoP` scheme: challenged with
    `DPoP`, the scheme the client used (RFC 9449 §7.1)."""


class DpopScopeRefused(InsufficientScope):
    """`InsufficientScope` for a request made with the `DPoP` scheme."""


def _resource_challenge(error: errors.InvalidToken | InsufficientScope) -> str:
    """RFC 6750 §3 (and RFC 9449 §7.1 for DPoP): the scheme the request used, the
    error, and for `insufficient_scope` the scope that would do."""
    scheme = "DPoP" if isinstance(error, DpopTokenRefused | DpopScopeRefused) else "Bearer"
    challenge = f'{scheme} realm="keyturn", error="{error.code}"'
    if isinstance(error, InsufficientScope):
        challenge += f', scope="{error.required}"'
    return challenge


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    status: int
    body: bytes
    headers: dict[str, str]


def clean_description(text: str) -> str:
    """`text` with every character RFC 6749 §5.2 forbids replaced by a space."""
    return _NOT_ALLOWED.sub(" ", text).strip()


def error_body(code: str, description: str | None) -> bytes:
    body: dict[str, str] = {"error": code}
    if description:
        body["error_description"] = clean_description(description)
    return json.dumps(body, separators=(",", ":")).encode()


def to_response(error: errors.KeyturnError, *, basic_auth_used: bool = False) -> ErrorResponse:
    """The HTTP answer to a domain error."""
    status = next(STATUS[kind] for kind in type(error).__mro__ if kind in STATUS)
    headers = {"Content-Type": "application/json", **NO_STORE}
    if isinstance(error, errors.InvalidClient) and (
        basic_auth_used or isinstance(error, UnsupportedAuthScheme)
    ):
        # RFC 6749 §5.2: a failed Authorization-header authentication MUST get 401
        # with a WWW-Authenticate of the scheme the client used; for a scheme keyturn
        # does not take (Bearer, Digest...), the challenge names the one it does.
        headers["WWW-Authenticate"] = 'Basic realm="keyturn", charset="UTF-8"'
    if isinstance(error, errors.InvalidToken | InsufficientScope):
        # RFC 6750 §3: the challenge names the scheme and the error.
        headers["WWW-Authenticate"] = _resource_challenge(error)
    if isinstance(error, UseDpopNonce):
        # RFC 9449 §8.1 (token endpoint), §9 (resource): the nonce to retry with.
        headers["DPoP-Nonce"] = error.nonce
    if isinstance(error, ResourceProofRefused | ResourceNonceRequired):
        headers["WWW-Authenticate"] = f'DPoP realm="keyturn", error="{error.code}"'
    if isinstance(error, errors.RateLimited):
        headers["Retry-After"] = str(max(1, error.retry_after))
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
    return ErrorResponse(status, error_body(error.code, error.public), headers)
