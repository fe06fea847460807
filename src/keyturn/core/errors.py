"""Domain errors, each with a stable code.

A code is an RFC 6749 §5.2 error code where one fits, so both HTTP surfaces answer in one
shape. `public` is what a caller may read; `detail` is for the log and the audit trail
only (it may say *why* a refresh token was refused; the caller never learns that).
The web layer maps each class to a status once; nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any, ClassVar


class KeyturnError(Exception):
    """Base of every error keyturn raises on purpose."""

    code: ClassVar[str] = "server_error"
    default_public: ClassVar[str] = "The request could not be completed."

    def __init__(self, public: str | None = None, *, detail: str = "") -> None:
        self.public = public if public is not None else self.default_public
        self.detail = detail
        super().__init__(f"{self.code}: {self.public}" + (f" ({detail})" if detail else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        # Whole across a process boundary (`keyturn serve` prepares in a child process).
        return (_rebuild, (type(self), self.public, self.detail))


def _rebuild(kind: type[KeyturnError], public: str, detail: str) -> KeyturnError:
    return kind(public, detail=detail)


class InvalidRequest(KeyturnError):
    code = "invalid_request"
    default_public = "The request is malformed."


class InvalidClient(KeyturnError):
    code = "invalid_client"
    default_public = "Client authentication failed."


class InvalidGrant(KeyturnError):
    code = "invalid_grant"
    # One description for every refused grant: a thief learns nothing from it.
    default_public = "The provided grant is invalid, expired or revoked."


class UnauthorizedClient(KeyturnError):
    code = "unauthorized_client"
    default_public = "The client is not allowed to use this grant type."


class UnsupportedGrantType(KeyturnError):
    code = "unsupported_grant_type"
    default_public = "The grant type is not supported."


class UnsupportedResponseType(KeyturnError):
    """RFC 6749 §4.1.2.1: the authorization server does not issue this response type."""

    code = "unsupported_response_type"
    default_public = "Only response_type=code is supported."


class InvalidScope(KeyturnError):
    code = "invalid_scope"
    default_public = "The requested scope is invalid or exceeds what was granted."


class LoginFailed(KeyturnError):
    """Wrong username, wrong password, disabled or unknown user: one answer for all."""

    code = "invalid_grant"
    default_public = "Invalid username or password."


class PasswordRejected(KeyturnError):
    """A new password breaks the password policy (length, common password)."""

    code = "invalid_request"
    default_public = "The new password does not meet the password policy."


class InvalidToken(KeyturnError):
    """A bearer access token that is missing, invalid, expired or of an ended session
    (RFC 6750 §3.1)."""

    code = "invalid_token"
    default_public = "The access token is invalid or expired."


class NotFound(KeyturnError):
    code = "not_found"
    default_public = "No such object."


class AlreadyExists(KeyturnError):
    code = "already_exists"
    default_public = "An object with this name already exists."


class RateLimited(KeyturnError):
    code = "rate_limited"
    default_public = "Too many requests; try again later."

    def __init__(self, retry_after: int, public: str | None = None, *, detail: str = "") -> None:
        super().__init__(public, detail=detail)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.retry_after, self.public), {"detail": self.detail})


class StoreUnavailable(KeyturnError):
    """The store could not be reached or did not answer in time: no state was changed
    that the caller can rely on, and no token may be issued."""

    code = "temporarily_unavailable"
    default_public = "The service is temporarily unavailable; try again shortly."


class SigningUnavailable(KeyturnError):
    """No usable signing key: the request fails rather than issue an unsigned token."""

    code = "temporarily_unavailable"
    default_public = "The service is temporarily unavailable; try again shortly."


ALL_ERRORS: tuple[type[KeyturnError], ...] = (
    KeyturnError,
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    LoginFailed,
    PasswordRejected,
    InvalidToken,
    NotFound,
    AlreadyExists,
    RateLimited,
    StoreUnavailable,
    SigningUnavailable,
)
"""Every error class; the web layer's mapping is tested against this list."""
