"""What a successful grant answers (RFC 6749 §5.1), before any transport shapes it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keyturn.core.ids import SessionId


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    """Seconds until the access token expires: `exp - iat`."""
    scope: str
    refresh_token: str | None
    """`None` for grants that issue no refresh token (client credentials)."""
    session_id: SessionId | None
    refresh_expires_at: datetime | None
    """The session's idle deadline: when this refresh token stops working if unused
    (the max-age of a refresh cookie)."""
    token_type: str = "Bearer"
    """`DPoP` for an access token bound to a key (RFC 9449 §5), else `Bearer`."""


def token_type_of(key_thumbprint: str | None) -> str:
    return "Bearer" if key_thumbprint is None else "DPoP"
