"""What the client kit raises to the application."""

from __future__ import annotations


class LoginRequired(Exception):
    """There is no refresh token, or the server refused it (`invalid_grant`: the
    session ended, was revoked, or expired). The saved tokens are gone; send the user to
    log in again."""


class RefreshFailed(Exception):
    """The token endpoint refused the refresh for a reason retrying cannot fix (a client
    misconfiguration such as `invalid_client`); the tokens are kept."""

    def __init__(self, error: str, description: str | None = None) -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}" if description else error)


class RefreshUnavailable(Exception):
    """The token endpoint could not be reached (or answered 5xx) after every retry; the
    tokens are kept, and the next request tries again."""


class GrantRefused(Exception):
    """A login or a grant (a code exchange) was refused: `status` and the answer's
    `error` (e.g. `invalid_grant` for a wrong password) and `error_description`."""

    def __init__(self, status: int, error: str, description: str | None = None) -> None:
        self.status = status
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}" if description else error)
