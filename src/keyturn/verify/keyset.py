"""A JSON Web Key Set as a resource server may trust it: public signing keys, each
bound to the one algorithm it names (RFC 8725 §3.1), and for how long it may be cached."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

from keyturn.crypto.keys import JoseKey

ALGORITHMS: Mapping[str, str] = {
    "ES256": "EC",
    "ES384": "EC",
    "EdDSA": "OKP",
    "RS256": "RSA",
    "PS256": "RSA",
}
"""Asymmetric algorithms only: never `none`, never an HMAC (a public key is no secret)."""
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})
DEFAULT_MAX_AGE = 300
MIN_MAX_AGE = 30
MAX_MAX_AGE = 86_400
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,9})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)


@dataclass(frozen=True)
class KeySet:
    keys: Mapping[str, tuple[str, JoseKey]] = field(default_factory=dict)
    """Each `kid` with its one algorithm and public key."""

    @classmethod
    def from_jwks(cls, document: Any) -> KeySet:
        """The usable keys of a JWKS document; anything odd about a key drops that key
        (a key with private members, no `kid` or `alg`, another use, an algorithm that
        does not fit its type), never the whole set."""
        entries = document.get("keys") if isinstance(document, dict) else None
        keys: dict[str, tuple[str, JoseKey]] = {}
        for jwk in entries if isinstance(entries, list) else []:
            usable = _usable(jwk)
            if usable is not None and usable[0] not in keys:
                keys[usable[0]] = usable[1]
        return cls(keys)


def _usable(jwk: Any) -> tuple[str, tuple[str, JoseKey]] | None:
    if not isinstance(jwk, dict) or PRIVATE_MEMBERS & jwk.keys():
        return None
    kid, alg, kty = jwk.get("kid"), jwk.get("alg"), jwk.get("kty")
    if not isinstance(kid, str) or not kid or not isinstance(alg, str):
        return None
    if not isinstance(kty, str) or ALGORITHMS.get(alg) != kty or jwk.get("use", "sig") != "sig":
        return None
    kind: type[JoseKey] = {"EC": ECKey, "OKP": OKPKey, "RSA": RSAKey}[kty]  # type: ignore[assignment]
    try:
        key = kind.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    return kid, (alg, key)


def max_age(cache_control: str | None) -> int:
    """Seconds a key set may be cached: the response's `max-age`, held between 30 s
    (so a flood of unknown tokens cannot make us hammer the issuer) and a day; 30 s for
    `no-store` or `no-cache`; 300 s when the issuer says nothing."""
    if not cache_control:
        return DEFAULT_MAX_AGE
    if _NO_CACHE.search(cache_control):
        return MIN_MAX_AGE
    found = _MAX_AGE.search(cache_control)
    if found is None:
        return DEFAULT_MAX_AGE
    return max(MIN_MAX_AGE, min(MAX_MAX_AGE, int(found.group(1))))
