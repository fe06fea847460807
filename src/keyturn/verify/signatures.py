"""JWS signature checks over `cryptography`, each published key prepared once.

joserfc's general path re-reads the header against its registry, looks the algorithm
up, wraps the key and decodes every segment again on each call; for the resource
server's one question (is this signature of this key good?) that was most of the cost
of a verification beside the signature itself (`docs/decisions/verify-kit-speed.md`).
Here each key becomes one function at key-set load, and a token costs one call into
`cryptography`: RFC 7518 §3.3 (RSASSA-PKCS1-v1_5), §3.4 (ECDSA, R || S fixed width),
§3.5 (RSASSA-PSS, salt as long as the hash) and RFC 8037 §3.1 (EdDSA).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from keyturn.crypto.keys import JoseKey

Check = Callable[[bytes, bytes], bool]
"""Whether the signature (second) is good for the JWS Signing Input (first)."""

_CURVES: dict[str, tuple[type[ec.EllipticCurve], hashes.HashAlgorithm, int]] = {
    "ES256": (ec.SECP256R1, hashes.SHA256(), 32),
    "ES384": (ec.SECP384R1, hashes.SHA384(), 48),
}


def prepare(alg: str, key: JoseKey) -> Check | None:
    """The signature check of `key` under `alg`, or None if the key does not fit the
    algorithm (a P-256 key published for ES384, an RSA key for EdDSA): no token can
    then pass under it."""
    public = key.get_op_key("verify")
    if alg in _CURVES and isinstance(public, ec.EllipticCurvePublicKey):
        curve, digest, width = _CURVES[alg]
        if not isinstance(public.curve, curve):
            return None
        return _ecdsa(public, ec.ECDSA(digest), width)
    if alg == "EdDSA" and isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _eddsa(public)
    if alg == "RS256" and isinstance(public, rsa.RSAPublicKey):
        return _rsa(public, padding.PKCS1v15())
    if alg == "PS256" and isinstance(public, rsa.RSAPublicKey):
        sha256 = hashes.SHA256()
        return _rsa(public, padding.PSS(mgf=padding.MGF1(sha256), salt_length=sha256.digest_size))
    return None


def _ecdsa(public: ec.EllipticCurvePublicKey, scheme: ec.ECDSA, width: int) -> Check:
    def check(signing_input: bytes, signature: bytes) -> bool:
        # RFC 7518 §3.4: exactly R || S, each `width` bytes big-endian; never DER.
        if len(signature) != 2 * width:
            return False
        r = int.from_bytes(signature[:width], "big")
        s = int.from_bytes(signature[width:], "big")
        try:
            public.verify(encode_dss_signature(r, s), signing_input, scheme)
        except InvalidSignature:
            return False
        return True

    return check


def _eddsa(public: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) -> Check:
    def check(signing_input: bytes, signature: bytes) -> bool:
        try:
            public.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True

    return check


def _rsa(public: rsa.RSAPublicKey, scheme: padding.AsymmetricPadding) -> Check:
    sha256 = hashes.SHA256()

    def check(signing_input: bytes, signature: bytes) -> bool:
        try:
            public.verify(signature, signing_input, scheme, sha256)
        except InvalidSignature:
            return False
        return True

    return check


# base64url to base64, and every character base64 has but base64url has not (`+`, `/`,
# the padding `=`) to one that the strict decoding below refuses.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
# The last character of a segment whose length is 2 or 3 modulo 4 carries bits beyond
# the data; only characters with those bits zero are the canonical encoding.
_CANONICAL_LAST = {2: frozenset(b"AQgw"), 3: frozenset(b"AEIMQUYcgkosw048")}
_PADDING = {0: b"", 2: b"==", 3: b"="}


def b64url_decode(segment: bytes) -> bytes:
    """The octets of a base64url segment without padding (RFC 7515 §2), in its one
    canonical spelling only: nothing outside the base64url alphabet, no padding, no
    bits set past the data. So no second spelling of a signature makes a second token
    string that verifies (which would let one token fill a cache keyed by the string).
    ValueError otherwise."""
    rest = len(segment) % 4
    if rest == 1 or (rest and segment[-1] not in _CANONICAL_LAST[rest]):
        raise ValueError("not canonical base64url")
    try:
        return binascii.a2b_base64(
            segment.translate(_TO_STANDARD) + _PADDING[rest], strict_mode=True
        )
    except binascii.Error:
        raise ValueError("not base64url") from None


_URL_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def b64url_decode_signed(segment: bytes) -> bytes:
    """The octets of a base64url segment that a good signature covers (the header and
    payload of a JWS whose signature verified): the signer fixed its spelling, and any
    other spelling would have failed the signature, so the lenient decoder suffices (a
    third cheaper than `b64url_decode`). ValueError if it is not base64 at all."""
    try:
        return binascii.a2b_base64(segment.translate(_URL_TO_STANDARD) + b"==")
    except binascii.Error:
        raise ValueError("not base64url") from None
