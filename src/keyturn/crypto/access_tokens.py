"""RFC 9068 access tokens: JWTs with `typ: at+jwt`, signed by the active key."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from keyturn.core.errors import SigningUnavailable
from keyturn.crypto.keys import ACCESS_TOKEN_TYP, JoseKey, KeyRing

TYP = ACCESS_TOKEN_TYP


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
    key_thumbprint: str | None = None,
) -> str:
    """Sign an access token (RFC 9068 §2.2 claims, plus `sid` for a session's token,
    and `cnf.jkt` for one bound to the DPoP key of that thumbprint, RFC 9449 §6.1).

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
    if key_thumbprint is not None:
        claims["cnf"] = {"jkt": key_thumbprint}
    return signing.signer.sign(claims)


class InvalidAccessToken(Exception):
    """The token is not a valid, current access token of this issuer: one error for
    every reason, so callers answer `active: false` / `invalid_token` alike."""


MAX_TOKEN_LENGTH = 8192
MAX_HEADER_LENGTH = 1024
MAX_KID_LENGTH = 128
MAX_NUMERIC_DATE = 2**53
TYPES = frozenset({"at+jwt", "application/at+jwt"})
REQUIRED = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
# Header parameters that would make the token choose its own key or processing: keys
# come only from the issuer's own key set (RFC 8725 §3.10; RFC 7515 §4.1.11).
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64"})


def _b64_json(segment: str, limit: int) -> Any:
    if len(segment) > limit:
        raise InvalidAccessToken("segment too large")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise InvalidAccessToken("segment is not base64url JSON") from None


def verify(
    token: str,
    keys: Mapping[str, tuple[str, JoseKey]],
    *,
    issuer: str,
    audience: str | None,
    now: datetime,
    leeway: int = 30,
    max_lifetime: int | None = None,
) -> dict[str, Any]:
    """The claims of `token` if it is a valid access token (RFC 9068 §4, RFC 8725).

    `audience=None` is for the issuer itself (introspection): any audience it issued.

    `keys` maps each published `kid` to its one algorithm and public key; nothing in
    the token picks a key or an algorithm outside it. Raises `InvalidAccessToken` for
    anything else, never another exception.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidAccessToken("token absent or too large")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidAccessToken("not a signed JWT")
    header = _b64_json(parts[0], MAX_HEADER_LENGTH)
    if not isinstance(header, dict):
        raise InvalidAccessToken("header is not an object")
    if FORBIDDEN_HEADERS & header.keys():
        raise InvalidAccessToken("forbidden header parameter")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in TYPES:
        raise InvalidAccessToken("typ is not at+jwt")
    kid = header.get("kid")
    if not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH or kid not in keys:
        raise InvalidAccessToken("unknown kid")
    alg, key = keys[kid]
    # One key, one algorithm (RFC 8725 §3.1): the header may not pick another.
    if header.get("alg") != alg:
        raise InvalidAccessToken("alg does not match the key")
    try:
        decoded = jwt.decode(token, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError, RecursionError):
        raise InvalidAccessToken("bad signature or encoding") from None
    claims = dict(decoded.claims)
    claim_times(claims, issuer, audience, now.timestamp(), leeway, max_lifetime)
    return claims


_REQUIRED = frozenset(REQUIRED)
_STRINGS = ("sub", "jti", "client_id")


def claim_times(
    claims: dict[str, Any],
    issuer: str,
    audience: str | None,
    now: float,
    leeway: int,
    max_lifetime: int | None = None,
) -> tuple[int, int]:
    """The claim rules of an access token (RFC 9068 §4, RFC 7519 §4.1) at `now`, seconds
    since the epoch: `InvalidAccessToken` if one fails, else `exp` and the not-before
    moment (the later of `iat` and `nbf`). The issuer's check and the verify kit's both
    take them from here; the kit's cache checks the two moments again on every call.

    `audience=None` is for the issuer itself (introspection): any audience it issued.
    """
    if not claims.keys() >= _REQUIRED:
        missing = next(name for name in REQUIRED if name not in claims)
        raise InvalidAccessToken(f"{missing} missing")
    if claims["iss"] != issuer:
        raise InvalidAccessToken("wrong issuer")
    aud = claims["aud"]
    # One audience, or a list naming it among others (RFC 7519 §4.1.3).
    if audience is None:
        named = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a for a in named):
            raise InvalidAccessToken("wrong audience")
    elif not audience or (aud != audience and not (isinstance(aud, list) and audience in aud)):
        raise InvalidAccessToken("wrong audience")
    if not (
        isinstance(claims["sub"], str)
        and isinstance(claims["jti"], str)
        and isinstance(claims["client_id"], str)
    ):
        name = next(n for n in _STRINGS if not isinstance(claims[n], str))
        raise InvalidAccessToken(f"{name} is not a string")
    if not isinstance(claims.get("scope", ""), str):
        raise InvalidAccessToken("scope is not a string")
    exp, iat = claims["exp"], claims["iat"]
    # The usual case, plain integers in range, without a call each.
    if not (type(exp) is int and 0 <= exp < MAX_NUMERIC_DATE):
        exp = _numeric_date(exp, "exp")
    if not (type(iat) is int and 0 <= iat < MAX_NUMERIC_DATE):
        iat = _numeric_date(iat, "iat")
    nbf = claims.get("nbf")
    not_before = iat if nbf is None else max(iat, _numeric_date(nbf, "nbf"))
    if exp <= now - leeway:
        raise InvalidAccessToken("expired")
    if not_before > now + leeway:
        raise InvalidAccessToken("not yet valid")
    if max_lifetime is not None and exp - iat > max_lifetime:
        raise InvalidAccessToken("lifetime longer than any token this issuer signs")
    return exp, not_before


def _numeric_date(value: Any, name: str) -> int:
    # bool is an int in Python; inf, NaN, strings and absurd years are not dates.
    if value is None:
        raise InvalidAccessToken(f"{name} missing")
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, float)):
        raise InvalidAccessToken(f"{name} is not a NumericDate")
    if not math.isfinite(value) or not 0 <= value < MAX_NUMERIC_DATE:
        raise InvalidAccessToken(f"{name} out of range")
    return int(value)
