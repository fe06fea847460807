"""RFC 9068 access tokens: JWTs with `typ: at+jwt`, signed by the active key."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from joserfc import jwt

from keyturn.core.errors import SigningUnavailable
from keyturn.crypto.keys import KeyRing

TYP = "at+jwt"


def mint(
    ring: KeyRing,
    *,
    issuer: str,
    subject: str,
    audience: str | Sequence[str],
    client_id: str,
    scope: str,
    session_id: str | None,
    issued_at: datetime,
    expires_at: datetime,
    jti: str,
) -> str:
    """Sign an access token (RFC 9068 §2.2 claims, plus `sid` for a session's token).

    `SigningUnavailable` if no signing key is active: never an unsigned token.
    """
    signing = ring.signing
    if signing is None:
        raise SigningUnavailable(detail="no active signing key")
    audiences = [audience] if isinstance(audience, str) else list(audience)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audiences[0] if len(audiences) == 1 else audiences,
        "exp": int(expires_at.timestamp()),
        "iat": int(issued_at.timestamp()),
        "jti": jti,
        "client_id": client_id,
        "scope": scope,
    }
    if session_id is not None:
        claims["sid"] = session_id
    header = {"typ": TYP, "alg": signing.alg, "kid": signing.kid}
    return jwt.encode(header, claims, signing.key, algorithms=[signing.alg])
