"""Signing access tokens: a JWS in compact serialization (RFC 7515 §7.1) under a
protected header that never changes for a key.

joserfc signs through its general path: on every call it validates the header, looks
the algorithm up in its registry, re-encodes the header and wraps the key. keyturn's
access-token header is fixed per key (`typ`, `alg`, `kid`), so it is encoded once here,
and each token is one JSON encoding, one base64url and one signature computed by
`cryptography` (RFC 7518 §3.3 and §3.4, RFC 8037 §3.1). That saves about a fifth of a
rotation's CPU (`docs/decisions.md`). Every token keyturn itself accepts is still
verified by joserfc (`access_tokens.verify`; the verify kit at resource servers checks
with `cryptography` directly, docs/decisions/verify-kit-speed.md), and the tests check
that what this signs verifies under joserfc and PyJWT, for each algorithm.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

_SHA256 = hashes.SHA256()
_ECDSA_SHA256 = ec.ECDSA(_SHA256)
_P256_BYTES = 32


def b64url(data: bytes) -> bytes:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


Sign = Callable[[bytes], bytes]
"""The JWS Signature octets of a JWS Signing Input."""


def _signer(alg: str, private_pem: bytes) -> Sign:
    private = serialization.load_pem_private_key(private_pem, password=None)
    if alg == "ES256" and isinstance(private, ec.EllipticCurvePrivateKey):
        if not isinstance(private.curve, ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key")
        es256 = private

        def sign_es256(signing_input: bytes) -> bytes:
            # RFC 7518 §3.4: R and S as 32-byte big-endian integers, not DER.
            r, s = decode_dss_signature(es256.sign(signing_input, _ECDSA_SHA256))
            return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")

        return sign_es256
    if alg == "EdDSA" and isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign
    if alg == "RS256" and isinstance(private, rsa.RSAPrivateKey):
        rs256 = private

        def sign_rs256(signing_input: bytes) -> bytes:
            return rs256.sign(signing_input, padding.PKCS1v15(), _SHA256)

        return sign_rs256
    raise ValueError(f"no {alg} signer for a {type(private).__name__}")


class CompactSigner:
    """Signs payloads under one key and one protected header."""

    __slots__ = ("_prefix", "_sign")

    def __init__(self, header: Mapping[str, Any], private_pem: bytes) -> None:
        self._sign = _signer(str(header["alg"]), private_pem)
        self._prefix = b64url(_json(header)) + b"."

    def sign(self, claims: Mapping[str, Any]) -> str:
        """`BASE64URL(header) "." BASE64URL(claims) "." BASE64URL(signature)`."""
        signing_input = self._prefix + b64url(_json(claims))
        return (signing_input + b"." + b64url(self._sign(signing_input))).decode("ascii")
