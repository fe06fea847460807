"""The cold check of an access token (RFC 9068 §4, RFC 8725) over prepared keys.

The same rules as `keyturn.crypto.access_tokens.verify`, which the issuer itself uses,
with the token read once: one ASCII encoding, one base64url and one JSON decoding per
segment (strict but for the payload, read after its signature verified), and the
signature checked by `cryptography` under a key prepared when the key set was loaded
(`signatures.prepare`). The claim rules are the issuer's own
(`access_tokens.claim_times`, over the clock as a number), and they hand back `exp` and
the not-before moment the cache checks again. An issuer signs every token of a
key under one header, so a header that has already led to a good signature is
remembered, by its exact bytes, with the key it names. joserfc's general path read each
segment two or three times and cost as much again as the signature
(`docs/decisions/verify-kit-speed.md`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from keyturn.crypto.access_tokens import (
    FORBIDDEN_HEADERS,
    MAX_HEADER_LENGTH,
    MAX_KID_LENGTH,
    MAX_TOKEN_LENGTH,
    TYPES,
    InvalidAccessToken,
    claim_times,
)
from keyturn.verify.signatures import Check, b64url_decode, b64url_decode_signed

MAX_HEADERS = 64
"""Headers remembered per key set; an issuer uses one per key."""


class PreparedKeys:
    """Each published `kid` with its one algorithm and its signature check (None when
    the key does not fit its algorithm), and the headers already seen to name them."""

    __slots__ = ("headers", "keys")

    def __init__(self, keys: Mapping[str, tuple[str, Check | None]]) -> None:
        self.keys = keys
        self.headers: dict[bytes, Check] = {}
        """A header segment, exactly, that passed every header rule and then led to a
        good signature, with its key's check. Only such headers enter (forged ones
        never do), at most `MAX_HEADERS`; a new key set starts empty."""


# The header parameters a JWS may carry (RFC 7515 §4.1, as joserfc registers them)
# less those that would let the token pick its own key or processing; each a string.
_HEADER_PARAMETERS = frozenset({"alg", "kid", "typ", "cty", "x5t", "x5t#S256"})


class UnknownKid(InvalidAccessToken):
    """The header names a key not in the set: perhaps one published since it was
    fetched."""


Verified = tuple[dict[str, Any], int, int]
"""The claims, `exp`, and the not-before moment: the later of `iat` and `nbf`, neither of
which may be in the future (RFC 7519 §4.1.5). (A plain tuple: this is the hot path.)"""


def verified_claims(
    token: str,
    keys: PreparedKeys,
    issuer: str,
    audience: str,
    now: float,
    leeway: int,
) -> Verified:
    """The claims of `token` if its header, signature and claims are those of a valid
    access token for `audience` at `now` (seconds since the epoch).
    `InvalidAccessToken` otherwise, `UnknownKid` if only the key is not known; never
    another exception."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidAccessToken("token absent or too large")
    try:
        data = token.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidAccessToken("not a signed JWT") from None
    first = data.find(b".")
    second = data.find(b".", first + 1)
    # RFC 7515 §7.1: three non-empty segments.
    if (
        first < 1
        or second < first + 2
        or second + 1 >= len(data)
        or data.find(b".", second + 1) >= 0
    ):
        raise InvalidAccessToken("not a signed JWT")
    head = data[:first]
    check = keys.headers.get(head)
    known = check is not None
    if check is None:
        check = _header_check(head, keys)
    try:
        signature = b64url_decode(data[second + 1 :])
    except ValueError:
        raise InvalidAccessToken("bad signature or encoding") from None
    if not check(data[:second], signature):
        raise InvalidAccessToken("bad signature or encoding")
    if not known and len(keys.headers) < MAX_HEADERS:
        keys.headers[head] = check
    try:
        claims = orjson.loads(b64url_decode_signed(data[first + 1 : second]))
    except ValueError:  # orjson.JSONDecodeError is one
        raise InvalidAccessToken("payload is not base64url JSON") from None
    if type(claims) is not dict:
        raise InvalidAccessToken("payload is not an object")
    expires, not_before = claim_times(claims, issuer, audience, now, leeway)
    return claims, expires, not_before


def _header_check(head: bytes, keys: PreparedKeys) -> Check:
    """The signature check of the key a header names, once every rule of the header
    holds."""
    if len(head) > MAX_HEADER_LENGTH:
        raise InvalidAccessToken("segment too large")
    try:
        header = orjson.loads(b64url_decode(head))
    except ValueError:
        raise InvalidAccessToken("header is not base64url JSON") from None
    if type(header) is not dict:
        raise InvalidAccessToken("header is not an object")
    kid = _checked_header(header)
    if kid not in keys.keys:
        raise UnknownKid("unknown kid")
    alg, check = keys.keys[kid]
    # One key, one algorithm (RFC 8725 §3.1): the header may not pick another.
    if header.get("alg") != alg:
        raise InvalidAccessToken("alg does not match the key")
    if check is None:
        raise InvalidAccessToken("the key does not fit its algorithm")
    return check


def _checked_header(header: dict[str, Any]) -> str:
    """The header's `kid`, once every other rule of the header holds."""
    if FORBIDDEN_HEADERS & header.keys():
        raise InvalidAccessToken("forbidden header parameter")
    if not _HEADER_PARAMETERS.issuperset(header) or not all(
        isinstance(value, str) for value in header.values()
    ):
        raise InvalidAccessToken("unsupported header parameter")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in TYPES:
        raise InvalidAccessToken("typ is not at+jwt")
    kid = header.get("kid")
    if not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH:
        raise InvalidAccessToken("unknown kid")
    return kid
