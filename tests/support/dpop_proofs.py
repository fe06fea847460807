"""DPoP proofs as a client makes them, signed by PyJWT (not by keyturn), so keyturn's
verifier is never tested only against itself; and the raw JWS pieces hostile tests need.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
URI = "https://api.example.com/notes"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def new_key(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: PrivateKey, private: bool = False) -> dict[str, Any]:
    """The JWK of `key` as PyJWT writes it (its private members too if asked)."""
    target = key if private else key.public_key()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        text = ECAlgorithm.to_jwk(target)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        text = OKPAlgorithm.to_jwk(target)
    else:
        text = RSAAlgorithm.to_jwk(target)
    value: dict[str, Any] = json.loads(text)
    value.pop("key_ops", None)
    return value


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3, written out here rather than asked of joserfc."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
        "RSA": ("e", "kty", "n"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64(hashlib.sha256(canonical).digest())


def ath(access_token: str) -> str:
    return b64(hashlib.sha256(access_token.encode()).digest())


@dataclass
class Client:
    """A DPoP client: one key pair, making proofs."""

    alg: str = "ES256"
    key: PrivateKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = new_key(self.alg)

    @property
    def jwk(self) -> dict[str, Any]:
        return public_jwk(self.key)

    @property
    def jkt(self) -> str:
        return thumbprint(self.jwk)

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Good claims for a POST to `URI` at `NOW`, with `changes` on top (a value of
        None drops the claim)."""
        body: dict[str, Any] = {
            "htm": "POST",
            "htu": URI,
            "iat": int(NOW.timestamp()),
            "jti": secrets.token_urlsafe(16),
        }
        body.update(changes)
        return {k: v for k, v in body.items() if v is not None}

    def proof(
        self,
        header: dict[str, Any] | None = None,
        *,
        signer: PrivateKey | None = None,
        alg: str | None = None,
        **changes: Any,
    ) -> str:
        """A proof signed by PyJWT: `typ` `dpop+jwt`, this client's public `jwk`, then
        `header` on top (a value of None drops the member), claims as `claims`."""
        head: dict[str, Any] = {"typ": "dpop+jwt", "jwk": self.jwk}
        head.update(header or {})
        # PyJWT deletes a falsy typ; it adds "alg" itself.
        return jwt.encode(
            self.claims(**changes),
            signer or self.key,
            algorithm=alg or self.alg,
            headers=head,
        )

    def raw(self, header: bytes, payload: bytes) -> str:
        """A JWS over exactly these header and payload octets, signed by this key."""
        signing_input = f"{b64(header)}.{b64(payload)}".encode()
        signature = jwt.get_algorithm_by_name(self.alg).sign(signing_input, self.key)
        return f"{signing_input.decode()}.{b64(signature)}"

    def header_bytes(self, **changes: Any) -> bytes:
        head = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.jwk, **changes}
        return json.dumps(head).encode()
