"""The claims of ID tokens and logout tokens (`keyturn.crypto.oidc_tokens`), signed with
keyturn's JWS signer and checked by libraries keyturn did not write: Authlib's OpenID
Connect ID-token validation (signature, `iss`, `aud`, `exp`, `nonce`, `at_hash`) and
PyJWT."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from authlib.oidc.core import CodeIDToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keyturn.crypto.compact_jws import CompactSigner, b64url
from keyturn.crypto.oidc_tokens import (
    BACKCHANNEL_LOGOUT_EVENT,
    ID_TOKEN_TYP,
    LOGOUT_TOKEN_TYP,
    id_token_claims,
    logout_token_claims,
    token_hash,
)

ISSUER = "https://auth.example.com"
CLIENT = "grafana"
NOW = datetime.now(UTC).replace(microsecond=0)
ACCESS_TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"


def _keys(alg: str) -> tuple[bytes, object]:
    private = {
        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "EdDSA": ed25519.Ed25519PrivateKey.generate,
    }[alg]()
    pem = private.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, private.public_key()  # type: ignore[attr-defined]


def _claims(alg: str, **changes: object) -> dict[str, object]:
    given: dict[str, object] = {
        "issuer": ISSUER,
        "subject": "user-1",
        "client_id": CLIENT,
        "alg": alg,
        "issued_at": NOW,
        "expires_at": NOW + timedelta(minutes=5),
        "auth_time": NOW - timedelta(minutes=1),
        "session_id": "3f1c0f0e-5d5b-4a3e-9d43-1f0c7e3f8a11",
        "nonce": "n-0S6_WzA2Mj",
        "access_token": ACCESS_TOKEN,
    }
    given.update(changes)
    return id_token_claims(**given)  # type: ignore[arg-type]


def test_at_hash_is_the_left_half_of_the_sha256_as_core_appendix_a_shows() -> None:
    # OpenID Connect Core 1.0, Appendix A.3: this access token's at_hash under RS256.
    assert token_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y", "RS256") == (
        "77QmUPtjPfzWtF2AnpK9RQ"
    )


def test_eddsa_id_tokens_hash_with_sha512() -> None:
    digest = hashlib.sha512(ACCESS_TOKEN.encode()).digest()
    assert token_hash(ACCESS_TOKEN, "EdDSA") == b64url(digest[:32]).decode()
    assert token_hash(ACCESS_TOKEN, "ES256") != token_hash(ACCESS_TOKEN, "EdDSA")


def test_an_alg_without_a_known_hash_is_refused() -> None:
    with pytest.raises(ValueError, match="HS256"):
        token_hash(ACCESS_TOKEN, "HS256")


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_an_id_token_passes_a_relying_partys_validation(alg: str) -> None:
    pem, public = _keys(alg)
    token = CompactSigner({"typ": ID_TOKEN_TYP, "alg": alg, "kid": "k1"}, pem).sign(_claims(alg))
    # The signature, issuer and audience by PyJWT; the OpenID Connect rules (nonce,
    # at_hash, auth_time, azp) by Authlib's ID-token claims validation.
    payload = jwt.decode(
        token,
        public,  # type: ignore[arg-type]
        algorithms=[alg],
        audience=CLIENT,
        issuer=ISSUER,
        options={"verify_exp": False},
    )
    header = jwt.get_unverified_header(token)
    params = {"nonce": "n-0S6_WzA2Mj", "client_id": CLIENT, "access_token": ACCESS_TOKEN}
    options = {"iss": {"value": ISSUER}, "aud": {"value": CLIENT}}
    claims = CodeIDToken(payload, header, options, params)
    claims.validate(now=int(NOW.timestamp()))
    assert claims["sid"] == "3f1c0f0e-5d5b-4a3e-9d43-1f0c7e3f8a11"
    assert claims["auth_time"] == int((NOW - timedelta(minutes=1)).timestamp())
    # The same validation refuses another access token or another nonce.
    for changed in ({"access_token": "another"}, {"nonce": "another"}):
        tampered = CodeIDToken(payload, header, options, {**params, **changed})
        with pytest.raises(Exception, match=r"at_hash|nonce"):
            tampered.validate(now=int(NOW.timestamp()))


def test_an_eddsa_id_token_verifies_with_pyjwt() -> None:
    pem, public = _keys("EdDSA")
    token = CompactSigner({"typ": ID_TOKEN_TYP, "alg": "EdDSA", "kid": "k1"}, pem).sign(
        _claims("EdDSA")
    )
    decoded = jwt.decode(
        token,
        public,
        algorithms=["EdDSA"],
        audience=CLIENT,
        issuer=ISSUER,  # type: ignore[arg-type]
        options={"require": ["exp", "iat", "sub", "aud", "iss"], "verify_exp": False},
    )
    assert decoded["at_hash"] == token_hash(ACCESS_TOKEN, "EdDSA")
    # The claims carry fixed times (NOW, read once): their values, not the clock, are checked.
    assert decoded["exp"] == int((NOW + timedelta(minutes=5)).timestamp())
    assert jwt.get_unverified_header(token)["typ"] == "JWT"


def test_a_refreshs_id_token_has_no_nonce_and_the_original_auth_time() -> None:
    first = _claims("ES256")
    later = _claims(
        "ES256",
        issued_at=NOW + timedelta(hours=1),
        expires_at=NOW + timedelta(hours=1, minutes=5),
        nonce=None,
        access_token=None,
        extra={"nonce": "stale", "preferred_username": "alice"},
    )
    assert "nonce" not in later
    assert "at_hash" not in later
    assert later["auth_time"] == first["auth_time"]
    for same in ("iss", "sub", "aud", "sid"):
        assert later[same] == first[same]
    assert later["preferred_username"] == "alice"


def test_extra_claims_never_replace_the_ones_that_identify() -> None:
    claims = _claims("ES256", extra={"iss": "https://evil", "sub": "admin", "aud": "x"})
    assert (claims["iss"], claims["sub"], claims["aud"]) == (ISSUER, "user-1", CLIENT)


def test_more_audiences_than_the_client_name_it_as_azp() -> None:
    single = _claims("ES256", audience=[CLIENT])
    assert single["aud"] == CLIENT
    assert "azp" not in single
    several = _claims("ES256", audience=["https://api.example.com"])
    assert several["aud"] == [CLIENT, "https://api.example.com"]
    assert several["azp"] == CLIENT


def test_a_logout_token_is_what_back_channel_logout_receivers_check() -> None:
    pem, public = _keys("ES256")
    claims = logout_token_claims(
        issuer=ISSUER,
        client_id=CLIENT,
        subject="user-1",
        session_id="sid-1",
        issued_at=NOW,
        jti="jti-1",
    )
    token = CompactSigner({"typ": LOGOUT_TOKEN_TYP, "alg": "ES256", "kid": "k1"}, pem).sign(claims)
    decoded = jwt.decode(
        token,
        public,  # type: ignore[arg-type]
        algorithms=["ES256"],
        audience=CLIENT,
        issuer=ISSUER,
        options={"require": ["iss", "aud", "iat", "exp", "jti"], "verify_exp": False},
    )
    assert decoded["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}
    assert json.dumps(decoded["events"][BACKCHANNEL_LOGOUT_EVENT]) == "{}"
    assert decoded["sid"] == "sid-1"
    assert decoded["sub"] == "user-1"
    assert "nonce" not in decoded
    assert decoded["exp"] - decoded["iat"] == 120
    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
