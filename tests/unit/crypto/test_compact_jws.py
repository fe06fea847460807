"""The access-token signer: what it signs is a compact JWS that joserfc and PyJWT
verify, for every algorithm keyturn offers, whatever the claims."""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, OKPKey, RSAKey

from keyturn.crypto.compact_jws import CompactSigner
from keyturn.crypto.keys import SIGNING_ALGS

Private = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
CLAIMS: dict[str, Any] = {
    "iss": "https://as.test",
    "sub": "user-1",
    "aud": "api",
    "exp": 2_000_000_000,
    "iat": 1_700_000_000,
    "jti": "0123456789abcdef",
    "client_id": "native",
    "scope": "read write",
    "sid": "00000000-0000-4000-8000-000000000002",
}


@cache
def private_key(alg: str) -> Private:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: Private) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def header(alg: str) -> dict[str, str]:
    return {"typ": "at+jwt", "alg": alg, "kid": f"kid-{alg}"}


def signer(alg: str) -> CompactSigner:
    return CompactSigner(header(alg), pem(private_key(alg)))


def jose_public(alg: str) -> ECKey | OKPKey | RSAKey:
    kind = {"ES256": ECKey, "EdDSA": OKPKey, "RS256": RSAKey}[alg]
    return kind.import_key(private_key(alg).public_key())  # type: ignore[attr-defined,no-any-return]


def segments(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")]


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_joserfc_and_pyjwt_verify_what_it_signs(alg: str) -> None:
    token = signer(alg).sign(CLAIMS)
    decoded = jose_jwt.decode(token, jose_public(alg), algorithms=[alg])
    assert decoded.header == header(alg)
    assert decoded.claims == CLAIMS
    assert pyjwt.get_unverified_header(token) == header(alg)
    verified = pyjwt.decode(token, private_key(alg).public_key(), algorithms=[alg], audience="api")
    assert verified == CLAIMS


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_changed_claims_break_the_signature(alg: str) -> None:
    head, _, signature = signer(alg).sign(CLAIMS).split(".")
    other = signer(alg).sign({**CLAIMS, "sub": "user-2"}).split(".")[1]
    forged = f"{head}.{other}.{signature}"
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(forged, private_key(alg).public_key(), algorithms=[alg], audience="api")
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(forged, jose_public(alg), algorithms=[alg])


def test_es256_signatures_are_r_and_s_of_32_bytes_each_even_when_short() -> None:
    """RFC 7518 §3.4: fixed-width R || S, not DER. One R or S in 128 has a leading zero
    byte; 2,000 signatures meet some, and each must still verify."""
    es256 = signer("ES256")
    public = private_key("ES256").public_key()
    short = 0
    for n in range(2000):
        token = es256.sign({**CLAIMS, "jti": str(n)})
        signature = segments(token)[2]
        assert len(signature) == 64
        r, s = signature[:32], signature[32:]
        short += (r[0] == 0) + (s[0] == 0)
        pyjwt.decode(token, public, algorithms=["ES256"], audience="api")
    assert short > 0, "no short R or S met: the padding case was not exercised"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    claims=st.dictionaries(st.text(), json_values, max_size=8),
    alg=st.sampled_from(["ES256", "EdDSA"]),
)
def test_any_claims_come_back_as_signed(claims: dict[str, Any], alg: str) -> None:
    token = signer(alg).sign(claims)
    assert jose_jwt.decode(token, jose_public(alg), algorithms=[alg]).claims == claims
    assert json.loads(segments(token)[1]) == claims


@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("ES256", ed25519.Ed25519PrivateKey.generate()),
        ("ES256", ec.generate_private_key(ec.SECP384R1())),
        ("EdDSA", ec.generate_private_key(ec.SECP256R1())),
        ("RS256", ed25519.Ed25519PrivateKey.generate()),
        ("HS256", ec.generate_private_key(ec.SECP256R1())),
        ("none", ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_a_key_that_does_not_fit_the_algorithm_is_refused(alg: str, key: Private) -> None:
    with pytest.raises(ValueError, match=r"ES256 needs a P-256 key|no .* signer"):
        CompactSigner(header(alg), pem(key))
