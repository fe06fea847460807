"""Verifying DPoP proofs (RFC 9449 §4.3) and issuing the server's DPoP nonces (§8, §9).

A proof is a JWS the client signs with a key of its own, carried in its header as a
`jwk`. `DpopVerifier.verify` runs the checks of §4.3 in order, the cheap ones first so
that hostile input costs little to refuse (sizes, then the header, then the key, then
the signature, then the claims), and records the proof's `jti` last: a proof refused
for any reason, a missing nonce included, is never remembered, so the client can retry.

Nonces are stateless: an HMAC of a time bucket under a server key, so every process
holding the key issues and accepts the same ones with nothing shared but the key. A
nonce is accepted in its bucket and the next, so it lives between one and two buckets.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from hashlib import sha256
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from keyturn.core import json_object
from keyturn.core.dpop import (
    ProofReplayCache,
    VerifiedProof,
    b64url,
    bucket_of,
    check_claims,
    replay_expiry,
    replay_key,
)
from keyturn.core.dpop_errors import InvalidDpopProof, UseDpopNonce
from keyturn.crypto.keys import JoseKey

TYP = "dpop+jwt"
"""RFC 9449 §4.2: the proof's `typ`, compared exactly."""

KEY_TYPES: Mapping[str, tuple[str, frozenset[str]]] = {
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    "RS256": ("RSA", frozenset()),
    "RS384": ("RSA", frozenset()),
    "RS512": ("RSA", frozenset()),
    "PS256": ("RSA", frozenset()),
    "PS384": ("RSA", frozenset()),
    "PS512": ("RSA", frozenset()),
}
"""Every algorithm a proof may use, with the key type (and curves) it needs. Asymmetric
only (RFC 9449 §4.3 point 5): never `none`, never an HMAC, whose key would be the
public `jwk` itself."""

DEFAULT_ALGORITHMS = ("ES256", "EdDSA", "RS256", "PS256")
MAX_PROOF_LENGTH = 8192
MAX_HEADER_LENGTH = 4096
"""Of the header's base64url segment: room for an RSA-4096 `jwk`, not for much more."""
MAX_JWK_LENGTH = 1536
"""Of the `jwk` as compact JSON."""
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096
MIN_NONCE_KEY_BYTES = 32
DEFAULT_LEEWAY = 60
DEFAULT_NONCE_BUCKET_SECONDS = 300

PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# A proof's key is its `jwk` and nothing else (RFC 9449 §4.2); `crit` and `b64` would
# change how the JWS is processed (RFC 7515 §4.1.11, RFC 7797), which no proof needs.
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "x5c", "crit", "b64"})
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_KEY_CLASSES: Mapping[str, type[JoseKey]] = {"EC": ECKey, "OKP": OKPKey, "RSA": RSAKey}
_NONCE_CONTEXT = b"keyturn DPoP nonce (RFC 9449 section 8) bucket "


class DpopVerifier:
    """Checks DPoP proofs for one server.

    `replay_cache` remembers each accepted proof until its `iat` window closes; share one
    (Redis) between processes that serve the same URIs, or a proof accepted by one could
    be replayed at another. `leeway` is how far, in seconds, a proof's `iat` may be from
    the server's clock in either direction. With `nonce_key` (at least 32 random bytes,
    the same in every process), proofs must carry a nonce this verifier issued
    (`nonce`), in the current `nonce_bucket_seconds` bucket or the one before.
    """

    def __init__(
        self,
        replay_cache: ProofReplayCache,
        *,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway: int = DEFAULT_LEEWAY,
        nonce_key: bytes | None = None,
        nonce_bucket_seconds: int = DEFAULT_NONCE_BUCKET_SECONDS,
    ) -> None:
        allowed = tuple(algorithms)
        unknown = [alg for alg in allowed if alg not in KEY_TYPES]
        if unknown or not allowed:
            raise ValueError(
                f"DPoP algorithms must be asymmetric, from {', '.join(KEY_TYPES)}; "
                f"not {', '.join(unknown) or 'none at all'}"
            )
        if leeway < 1:
            raise ValueError("leeway must be at least a second")
        if nonce_key is not None and len(nonce_key) < MIN_NONCE_KEY_BYTES:
            raise ValueError(f"nonce_key must be at least {MIN_NONCE_KEY_BYTES} bytes")
        if nonce_bucket_seconds < 1:
            raise ValueError("nonce_bucket_seconds must be at least a second")
        self.algorithms = allowed
        self.leeway = leeway
        self._replay = replay_cache
        self._nonce_key = nonce_key
        self._bucket_seconds = nonce_bucket_seconds
        # joserfc's own limit (512 bytes) is below an RSA `jwk`; ours is checked first.
        self._registry = JWSRegistry(algorithms=list(allowed), strict_check_header=False)
        self._registry.max_header_length = MAX_HEADER_LENGTH

    @property
    def requires_nonce(self) -> bool:
        return self._nonce_key is not None

    def nonce(self, now: datetime) -> str | None:
        """The nonce to hand out now in a `DPoP-Nonce` header, or None when this
        verifier does not use nonces. Every holder of the key issues the same one."""
        if self._nonce_key is None:
            return None
        return self._nonce_for(self._nonce_key, bucket_of(now, self._bucket_seconds))

    async def verify(
        self,
        proof: str,
        *,
        method: str,
        uri: str,
        now: datetime,
        access_token: str | None = None,
        jkt: str | None = None,
    ) -> VerifiedProof:
        """The proof's key thumbprint and claims, if `proof` (the one `DPoP` header value;
        see `keyturn.core.dpop.single_proof`) passes every check of RFC 9449 §4.3 for a
        request of `method` to `uri` at `now`, and was not used before.

        With `access_token` (a resource request, §7), the proof must carry its `ath`;
        with `jkt` (the token's `cnf.jkt`, §6.1), its key must be that one.

        Raises `InvalidDpopProof`, or `UseDpopNonce` with a fresh nonce when nonces are
        required and the proof has none that is current. Nothing is recorded unless the
        proof passes every other check.
        """
        verified = self._check(
            proof, method=method, uri=uri, now=now, access_token=access_token, jkt=jkt
        )
        key = replay_key(verified.jkt, verified.jti)
        if not await self._replay.first_use(key, replay_expiry(verified.issued_at, self.leeway)):
            # RFC 9449 §11.1: a proof is used once.
            raise InvalidDpopProof(detail="jti already used")
        return verified

    def _check(
        self,
        proof: str,
        *,
        method: str,
        uri: str,
        now: datetime,
        access_token: str | None,
        jkt: str | None,
    ) -> VerifiedProof:
        if not isinstance(proof, str) or len(proof) > MAX_PROOF_LENGTH:
            raise InvalidDpopProof(detail="proof absent or too large")
        if "," in proof:
            # RFC 9449 §4.3 point 1: one proof per request, not a list of them.
            raise InvalidDpopProof(detail="more than one proof")
        if not _COMPACT.fullmatch(proof):
            # Point 2: a JWT in JWS compact serialization, signed (no empty signature).
            raise InvalidDpopProof(detail="not a compact JWS")
        head = proof.split(".", 1)[0]
        if len(head) > MAX_HEADER_LENGTH:
            raise InvalidDpopProof(detail="header too large")
        try:
            raw_header = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        except ValueError:
            raise InvalidDpopProof(detail="header is not base64url") from None
        header = _json_object(raw_header, "header")
        alg, key = self._header_key(header)
        try:
            signed = jws.deserialize_compact(proof, key, registry=self._registry)
        except (JoseError, ValueError, TypeError):
            # Point 6: the signature verifies with the key in the header.
            raise InvalidDpopProof(detail=f"signature does not verify ({alg})") from None
        claims = check_claims(
            _json_object(signed.payload, "payload"),
            method=method,
            uri=uri,
            now=now,
            leeway=self.leeway,
            access_token=access_token,
        )
        thumbprint = key.thumbprint()
        if jkt is not None and not hmac.compare_digest(thumbprint.encode(), jkt.encode()):
            # Point 12, §7.1: the proof's key is the one the access token is bound to.
            raise InvalidDpopProof(detail="proof key is not the key the token is bound to")
        if self._nonce_key is not None:
            self._check_nonce(self._nonce_key, claims.nonce, now)
        return VerifiedProof(
            jkt=thumbprint,
            jti=claims.jti,
            issued_at=claims.issued_at,
            htm=claims.htm,
            htu=claims.htu,
        )

    def _header_key(self, header: dict[str, Any]) -> tuple[str, JoseKey]:
        """Points 3 to 5 of RFC 9449 §4.3: `typ`, an allowed asymmetric `alg`, and a
        public `jwk` of the type that algorithm needs. Returns both."""
        if header.get("typ") != TYP:
            raise InvalidDpopProof(detail="typ is not dpop+jwt")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidDpopProof(detail="alg not allowed")
        if FORBIDDEN_HEADERS & header.keys():
            raise InvalidDpopProof(detail="forbidden header parameter")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise InvalidDpopProof(detail="jwk missing")
        if PRIVATE_MEMBERS & jwk.keys():
            # Point 5: a private key in the header would be the client's secret, leaked.
            raise InvalidDpopProof(detail="jwk holds private key material")
        if len(json.dumps(jwk, separators=(",", ":"))) > MAX_JWK_LENGTH:
            raise InvalidDpopProof(detail="jwk too large")
        kty, curves = KEY_TYPES[alg]
        if jwk.get("kty") != kty or (curves and jwk.get("crv") not in curves):
            raise InvalidDpopProof(detail="jwk type does not fit alg")
        try:
            key = _KEY_CLASSES[kty].import_key(jwk)
        except (JoseError, ValueError, TypeError, KeyError):
            raise InvalidDpopProof(detail="jwk is not a valid public key") from None
        if isinstance(key, RSAKey) and not (MIN_RSA_BITS <= key.raw_value.key_size <= MAX_RSA_BITS):
            # RFC 7518 §3.3 asks for 2048 bits at least; the ceiling keeps hostile
            # keys cheap to refuse.
            raise InvalidDpopProof(detail="RSA key size out of range")
        return alg, key

    def _check_nonce(self, nonce_key: bytes, presented: str | None, now: datetime) -> None:
        """Point 10: the proof carries a nonce of the current or the previous bucket.
        Otherwise `UseDpopNonce` with the current one (RFC 9449 §8)."""
        bucket = bucket_of(now, self._bucket_seconds)
        current = self._nonce_for(nonce_key, bucket)
        if presented is None:
            raise UseDpopNonce(current, detail="nonce missing")
        given = presented.encode()
        # Both compared, whatever the first gives, so timing says nothing of which.
        fresh = hmac.compare_digest(given, current.encode())
        recent = hmac.compare_digest(given, self._nonce_for(nonce_key, bucket - 1).encode())
        if not (fresh or recent):
            raise UseDpopNonce(current, detail="nonce stale or not issued here")

    @staticmethod
    def _nonce_for(nonce_key: bytes, bucket: int) -> str:
        return b64url(hmac.digest(nonce_key, _NONCE_CONTEXT + str(bucket).encode(), sha256))


def _json_object(raw: bytes, part: str) -> dict[str, Any]:
    """`raw` as a JSON object whose member names are unique (RFC 7515 §5.2 lets a JWS
    with duplicates be refused: two parsers may read different values)."""
    try:
        value = json_object.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidDpopProof(detail=f"{part} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidDpopProof(detail=f"{part} is not a JSON object")
    return value


_NONCE_KEY_INFO = b"keyturn DPoP nonce key v1"


def nonce_key_from(master_secret: bytes) -> bytes:
    """The server's DPoP nonce key, derived from its master secret (HKDF-SHA256 with a
    label of its own, so it is independent of every other key derived from it): every
    process of one deployment issues and accepts the same nonces, and there is no
    new secret to store or to rotate."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_NONCE_KEY_INFO).derive(
        master_secret
    )
