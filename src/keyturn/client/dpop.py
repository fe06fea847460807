"""DPoP proofs (RFC 9449) for the client kit: one EC P-256 key (ES256), the proofs it
signs, and the server nonces the kit has been given.

The key is the device's: every proof the kit sends is signed by it, so a refresh token
copied without it is worthless at a server that bound the session to the key, and a
retry with an older copy of the token, proven by it, is known for the device's own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

_COORDINATE = 32
"""Octets of a P-256 coordinate, and of each half of an ES256 signature (RFC 7518 §3.4)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(access_token: str) -> str:
    """The `ath` claim: base64url of the SHA-256 of the token's ASCII (RFC 9449 §4.2)."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def target_uri(url: str) -> str:
    """The `htu` of a request to `url`: the URI without its query and fragment
    (RFC 9449 §4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


def origin(url: str) -> str:
    """`scheme://host[:port]` of `url`, lower case: whose nonce a proof carries."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class DpopKey:
    """An EC P-256 private key and the DPoP proofs it signs (`alg` ES256)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("a DPoP key of the client kit is an EC P-256 key")
        self._key = private_key
        numbers = private_key.public_key().public_numbers()
        # RFC 7638 §3.2: exactly the required members, in lexicographic order.
        self.jwk: dict[str, str] = {
            "crv": "P-256",
            "kty": "EC",
            "x": b64url(numbers.x.to_bytes(_COORDINATE, "big")),
            "y": b64url(numbers.y.to_bytes(_COORDINATE, "big")),
        }
        canonical = json.dumps(self.jwk, separators=(",", ":"), sort_keys=True)
        self.thumbprint = b64url(hashlib.sha256(canonical.encode("ascii")).digest())
        """RFC 7638 thumbprint of the public key: the `cnf.jkt` of bound tokens."""

    @classmethod
    def generate(cls) -> DpopKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes) -> DpopKey:
        """A key from its unencrypted PKCS#8 PEM (what `to_pem` writes)."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("a DPoP key of the client kit is an EC P-256 key")
        return cls(key)

    def to_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM: keep it where only this user reads."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"DpopKey(thumbprint={self.thumbprint!r})"

    def proof(
        self,
        method: str,
        url: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
        now: float | None = None,
    ) -> str:
        """A DPoP proof JWT (RFC 9449 §4.2) for a `method` request to `url`: `typ`
        dpop+jwt, the public `jwk`, `htm`, `htu` (the URL without query and fragment),
        `iat`, a random `jti`, and `nonce` and `ath` (of `access_token`) when given."""
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": target_uri(url),
            "iat": int(time.time() if now is None else now),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        signing_input = f"{_b64json(header)}.{_b64json(claims)}".encode("ascii")
        der = self._key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        # JWS wants r || s, each as a fixed-length big-endian integer (RFC 7518 §3.4).
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_COORDINATE, "big") + s.to_bytes(_COORDINATE, "big")
        return f"{signing_input.decode('ascii')}.{b64url(signature)}"


def _b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


class Nonces:
    """The latest `DPoP-Nonce` each origin has sent (RFC 9449 §8, §9): the next proof to
    that origin carries it, so a challenge costs one round trip, not one per request."""

    def __init__(self) -> None:
        self._by_origin: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> str | None:
        with self._lock:
            return self._by_origin.get(origin(url))

    def learn(self, url: str, nonce: str | None) -> bool:
        """Remember `nonce` (a response's `DPoP-Nonce`) for the origin of `url`; True
        when it is one this kit did not hold."""
        if not nonce:
            return False
        with self._lock:
            before = self._by_origin.get(origin(url))
            self._by_origin[origin(url)] = nonce
        return before != nonce
