"""Key material: making signing and refresh MAC keys, and the in-memory key ring.

Private halves are sealed (`crypto.sealing`) before they reach a `StoredKey`; the ring
opens them once when it is built. A signing key's `kid` is its RFC 7638 thumbprint.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey, OKPKey, RSAKey

from keyturn.core.ids import KeyId
from keyturn.core.models import KeyState, KeyUse, StoredKey
from keyturn.core.ports import Randomness
from keyturn.crypto.compact_jws import CompactSigner
from keyturn.crypto.sealing import Sealer

SIGNING_ALGS = ("ES256", "EdDSA", "RS256")
"""Asymmetric only: HS256 is never offered for access tokens (RFC 8725 §3.1)."""

JoseKey = ECKey | OKPKey | RSAKey

ACCESS_TOKEN_TYP = "at+jwt"
"""The `typ` of every token a signing key signs (RFC 9068 §2.1)."""

# RFC 9864 names the EdDSA curves in the algorithm ("Ed25519"); resource-server
# libraries still expect "EdDSA", which keyturn keeps publishing for them.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", module="joserfc")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The active signing key: `key` for joserfc, `signer` signing access tokens under
    the header `{"typ": "at+jwt", "alg": alg, "kid": kid}`."""

    kid: KeyId
    alg: str
    key: JoseKey
    signer: CompactSigner


def _private_key(
    alg: str,
) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unsupported signing algorithm {alg!r}; one of {', '.join(SIGNING_ALGS)}")


def _import(alg: str, pem: bytes) -> JoseKey:
    kind: type[JoseKey] = {"ES256": ECKey, "EdDSA": OKPKey, "RS256": RSAKey}[alg]  # type: ignore[assignment]
    return kind.import_key(pem)


def new_signing_key(alg: str, sealer: Sealer, now: datetime) -> StoredKey:
    """A fresh signing key in state NEXT, its private half sealed."""
    private = _private_key(alg)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = _import(alg, pem)
    kid = KeyId(key.thumbprint())
    public = key.as_dict(private=False)
    public.update({"kid": kid, "alg": alg, "use": "sig"})
    return StoredKey(
        kid=kid,
        use=KeyUse.SIGNING,
        alg=alg,
        state=KeyState.NEXT,
        public_jwk=json.dumps(public, sort_keys=True),
        encrypted_private=sealer.seal(pem, kid),
        created_at=now,
    )


def new_refresh_mac_key(
    key_id: int, sealer: Sealer, randomness: Randomness, now: datetime
) -> StoredKey:
    """A fresh 256-bit refresh MAC key in state NEXT, sealed; its kid is `key_id`."""
    kid = KeyId(str(key_id))
    return StoredKey(
        kid=kid,
        use=KeyUse.REFRESH_MAC,
        alg="HS256",
        state=KeyState.NEXT,
        public_jwk=None,
        encrypted_private=sealer.seal(randomness.token_bytes(32), kid),
        created_at=now,
    )


def _live(key: StoredKey, now: datetime) -> bool:
    return key.state is not KeyState.RETIRED or (
        key.publish_until is not None and key.publish_until > now
    )


class OpenedKeys:
    """The opened private halves of stored keys, remembered by kid and sealed blob, so
    that a ring built again from an unchanged key table unseals and imports nothing
    (importing an RSA private key costs a noticeable fraction of a second).

    One ring is built at a time (the caller serialises builds); a build may run on a
    worker thread.
    """

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer
        self._mac: dict[tuple[str, bytes], bytes] = {}
        self._signing: dict[tuple[str, bytes], SigningKey] = {}
        self._public: dict[str, JoseKey] = {}
        self.opened = 0
        """Private halves unsealed so far: what a reload of an unchanged table must not
        add to."""

    def mac_key(self, key: StoredKey) -> bytes:
        found = self._mac.get((key.kid, key.encrypted_private))
        if found is None:
            found = self._sealer.unseal(key.encrypted_private, key.kid)
            self.opened += 1
            self._mac[(key.kid, key.encrypted_private)] = found
        return found

    def signing_key(self, key: StoredKey) -> SigningKey:
        found = self._signing.get((key.kid, key.encrypted_private))
        if found is None:
            pem = self._sealer.unseal(key.encrypted_private, key.kid)
            self.opened += 1
            header = {"typ": ACCESS_TOKEN_TYP, "alg": key.alg, "kid": key.kid}
            found = SigningKey(key.kid, key.alg, _import(key.alg, pem), CompactSigner(header, pem))
            self._signing[(key.kid, key.encrypted_private)] = found
        return found

    def public_key(self, jwk_text: str) -> JoseKey:
        found = self._public.get(jwk_text)
        if found is None:
            found = _import_public(json.loads(jwk_text))
            self._public[jwk_text] = found
        return found

    def keep_only(self, keys: Sequence[StoredKey]) -> None:
        """Forget the material of keys no longer stored."""
        blobs = {(k.kid, k.encrypted_private) for k in keys}
        texts = {k.public_jwk for k in keys}
        self._mac = {n: v for n, v in self._mac.items() if n in blobs}
        self._signing = {n: v for n, v in self._signing.items() if n in blobs}
        self._public = {t: v for t, v in self._public.items() if t in texts}


class KeyRing:
    """The keys of one moment, opened: what signs, what verifies, what is published.

    `opened`, if given, remembers opened keys between rings (`OpenedKeys`)."""

    def __init__(
        self,
        keys: Sequence[StoredKey],
        sealer: Sealer,
        now: datetime,
        *,
        opened: OpenedKeys | None = None,
    ) -> None:
        material = opened if opened is not None else OpenedKeys(sealer)
        live = [k for k in keys if _live(k, now)]
        newest_first = sorted(live, key=lambda k: k.activated_at or k.created_at, reverse=True)
        published = [
            k.public_jwk
            for k in sorted(live, key=lambda k: k.created_at)
            if k.use is KeyUse.SIGNING and k.public_jwk
        ]
        self._published = [json.loads(text) for text in published]
        self.refresh_mac_keys: dict[int, bytes] = {
            int(k.kid): material.mac_key(k) for k in live if k.use is KeyUse.REFRESH_MAC
        }
        active_signing = [
            k for k in newest_first if k.use is KeyUse.SIGNING and k.state is KeyState.ACTIVE
        ]
        self.signing: SigningKey | None = (
            material.signing_key(active_signing[0]) if active_signing else None
        )
        active_mac = [
            k for k in newest_first if k.use is KeyUse.REFRESH_MAC and k.state is KeyState.ACTIVE
        ]
        self.active_mac_key_id: int = int(active_mac[0].kid) if active_mac else -1
        self.verification_keys: dict[str, tuple[str, JoseKey]] = {
            jwk["kid"]: (jwk["alg"], material.public_key(text))
            for text, jwk in zip(published, self._published, strict=True)
        }

    def jwks(self) -> dict[str, Any]:
        """The public JWK set: next, active, and retired-but-unexpired signing keys."""
        return {"keys": list(self._published)}


def _import_public(jwk: dict[str, Any]) -> JoseKey:
    kind: type[JoseKey] = {"EC": ECKey, "OKP": OKPKey, "RSA": RSAKey}[jwk["kty"]]  # type: ignore[assignment]
    return kind.import_key(jwk)
