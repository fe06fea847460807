"""Keys, the key ring, the key life cycle, and RFC 9068 access tokens with the attack
cases of RFC 8725 (JV rows)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from keyturn.core import key_lifecycle
from keyturn.core.errors import SigningUnavailable
from keyturn.core.ids import KeyId
from keyturn.core.models import KeyState, KeyUse, StoredKey
from keyturn.crypto.access_tokens import InvalidAccessToken, mint, verify
from keyturn.crypto.keys import KeyRing, new_refresh_mac_key, new_signing_key
from keyturn.crypto.sealing import Sealer

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SEALER = Sealer(b"m" * 32)
ISS = "https://as.test"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


class Random:
    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


def make_signing(now: datetime, existing: object = None, alg: str = "ES256") -> StoredKey:
    return new_signing_key(alg, SEALER, now)


def make_mac(now: datetime, existing: list[StoredKey]) -> StoredKey:
    return new_refresh_mac_key(key_lifecycle.next_mac_key_id(existing), SEALER, Random(), now)


def bootstrapped(alg: str = "ES256") -> list[StoredKey]:
    keys = key_lifecycle.plan_bootstrap(
        [], KeyUse.SIGNING, NOW, lambda now, ex: make_signing(now, ex, alg)
    )
    return keys + key_lifecycle.plan_bootstrap(keys, KeyUse.REFRESH_MAC, NOW, make_mac)


def token(ring: KeyRing, **changes: Any) -> str:
    values: dict[str, Any] = {
        "issuer": ISS,
        "subject": "user-1",
        "audience": "api",
        "client_id": "native",
        "scope": "read write",
        "session_id": "sid-1",
        "issued_at": NOW,
        "expires_at": NOW + timedelta(minutes=15),
        "jti": secrets.token_hex(16),
    }
    values.update(changes)
    return mint(ring, **values)


def check(ring: KeyRing, value: str, **kw: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"issuer": ISS, "audience": "api", "now": NOW}
    options.update(kw)
    return verify(value, ring.verification_keys, **options)


def b64(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segment(value: str, index: int) -> dict[str, Any]:
    part = value.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def header_of(value: str) -> dict[str, Any]:
    return _segment(value, 0)


def claims_of(value: str) -> dict[str, Any]:
    return _segment(value, 1)


def reheader(value: str, **header: Any) -> str:
    """The same token with its header replaced (signature kept)."""
    _, payload, signature = value.split(".")
    return f"{b64(header)}.{payload}.{signature}"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_at01_every_algorithm_mints_tokens_that_verify(alg: str) -> None:
    ring = KeyRing(bootstrapped(alg), SEALER, NOW)
    value = token(ring)
    header = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    assert header["typ"] == "at+jwt"
    assert header["alg"] == alg
    assert header["kid"] in {k["kid"] for k in ring.jwks()["keys"]}
    assert set(header) == {"typ", "alg", "kid"}
    claims = check(ring, value)
    assert claims["sid"] == "sid-1"
    assert claims["exp"] - claims["iat"] == 900


def test_at02_claims_are_complete_and_jti_unique() -> None:
    ring = KeyRing(bootstrapped(), SEALER, NOW)
    seen = set()
    for _ in range(50):
        claims = check(ring, token(ring))
        assert {"iss", "exp", "aud", "sub", "client_id", "iat", "jti", "scope", "sid"} <= set(
            claims
        )
        assert isinstance(claims["scope"], str)
        seen.add(claims["jti"])
    assert len(seen) == 50


def test_client_credentials_tokens_have_no_sid_and_may_have_many_audiences() -> None:
    ring = KeyRing(bootstrapped(), SEALER, NOW)
    claims = check(ring, token(ring, session_id=None, audience=["api", "other"]))
    assert "sid" not in claims
    assert claims["aud"] == ["api", "other"]


def test_no_active_key_means_no_token() -> None:
    keys = [
        k for k in bootstrapped() if k.state is not KeyState.ACTIVE or k.use is not KeyUse.SIGNING
    ]
    with pytest.raises(SigningUnavailable):
        token(KeyRing(keys, SEALER, NOW))


def test_md03_jwks_publishes_next_active_and_unexpired_retired_keys_without_private_parts() -> None:
    keys = bootstrapped()
    rotated = key_lifecycle.plan_rotation(keys, KeyUse.SIGNING, NOW, 1000, make_signing)
    merged = {k.kid: k for k in keys} | {k.kid: k for k in rotated}
    ring = KeyRing(list(merged.values()), SEALER, NOW)
    published = ring.jwks()["keys"]
    assert len(published) == 3
    assert len({k["kid"] for k in published}) == 3
    for jwk in published:
        assert not PRIVATE_MEMBERS & set(jwk)
        assert jwk["use"] == "sig"
        assert jwk["alg"] == "ES256"
    later = KeyRing(list(merged.values()), SEALER, NOW + timedelta(seconds=1001))
    assert len(later.jwks()["keys"]) == 2


def test_md04_a_token_of_a_retired_key_verifies_until_the_key_expires() -> None:
    keys = bootstrapped()
    before = KeyRing(keys, SEALER, NOW)
    old_token = token(before)
    rotated = key_lifecycle.plan_rotation(keys, KeyUse.SIGNING, NOW, 1000, make_signing)
    after_keys = list(({k.kid: k for k in keys} | {k.kid: k for k in rotated}).values())
    after = KeyRing(after_keys, SEALER, NOW)
    new_token = token(after)
    assert header_of(old_token)["kid"] != header_of(new_token)["kid"]
    assert check(after, old_token)
    gone = KeyRing(after_keys, SEALER, NOW + timedelta(seconds=1001))
    with pytest.raises(InvalidAccessToken):
        check(gone, old_token, now=NOW)


def test_private_keys_are_sealed_at_rest() -> None:
    for key in bootstrapped():
        assert b"PRIVATE KEY" not in key.encrypted_private
        assert key.encrypted_private[:1] == b"\x01"


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        new_signing_key("HS256", SEALER, NOW)


# Key life cycle


def test_bootstrap_creates_an_active_and_a_next_key_once() -> None:
    keys = bootstrapped()
    for use in KeyUse:
        states = sorted(k.state.value for k in keys if k.use is use)
        assert states == ["active", "next"]
    assert key_lifecycle.plan_bootstrap(keys, KeyUse.SIGNING, NOW, make_signing) == []


def test_rotation_retires_activates_and_adds_a_next_key() -> None:
    keys = bootstrapped()
    changed = key_lifecycle.plan_rotation(keys, KeyUse.SIGNING, NOW, 60, make_signing)
    by_state = {k.state: k for k in changed}
    old_active = next(k for k in keys if k.use is KeyUse.SIGNING and k.state is KeyState.ACTIVE)
    old_next = next(k for k in keys if k.use is KeyUse.SIGNING and k.state is KeyState.NEXT)
    assert by_state[KeyState.RETIRED].kid == old_active.kid
    assert by_state[KeyState.RETIRED].publish_until == NOW + timedelta(seconds=60)
    assert by_state[KeyState.ACTIVE].kid == old_next.kid
    assert by_state[KeyState.NEXT].kid not in {old_active.kid, old_next.kid}


def test_rotation_without_a_next_key_activates_a_fresh_one() -> None:
    keys = [k for k in bootstrapped() if k.state is not KeyState.NEXT]
    changed = key_lifecycle.plan_rotation(keys, KeyUse.SIGNING, NOW, 60, make_signing)
    assert sorted(k.state.value for k in changed) == ["active", "next", "retired"]


def test_rotation_with_a_spare_next_key_adds_none() -> None:
    keys = bootstrapped()
    spare = replace(make_signing(NOW + timedelta(seconds=1)), state=KeyState.NEXT)
    changed = key_lifecycle.plan_rotation([*keys, spare], KeyUse.SIGNING, NOW, 60, make_signing)
    assert sorted(k.state.value for k in changed) == ["active", "retired"]


def test_expired_retired_keys_are_listed_for_deletion() -> None:
    retired = replace(bootstrapped()[0], state=KeyState.RETIRED, publish_until=NOW)
    assert key_lifecycle.expired_kids([retired], NOW) == [retired.kid]
    assert key_lifecycle.expired_kids([retired], NOW - timedelta(seconds=1)) == []


def test_mac_key_ids_skip_used_ones_and_wrap() -> None:
    mac = next(k for k in bootstrapped() if k.use is KeyUse.REFRESH_MAC)
    top = replace(mac, kid=KeyId("65535"))
    zero = replace(mac, kid=KeyId("0"))
    assert key_lifecycle.next_mac_key_id([]) == 1
    assert key_lifecycle.next_mac_key_id([top]) == 0
    assert key_lifecycle.next_mac_key_id([top, zero]) == 1


def test_mac_key_ids_can_run_out() -> None:
    mac = next(k for k in bootstrapped() if k.use is KeyUse.REFRESH_MAC)
    every = [replace(mac, kid=KeyId(str(i))) for i in range(65536)]
    with pytest.raises(RuntimeError, match="in use"):
        key_lifecycle.next_mac_key_id(every)


# Attack cases (RFC 8725, RFC 9068 §4): each is refused with InvalidAccessToken.

RING = KeyRing(bootstrapped(), SEALER, NOW)
GOOD = token(RING)
KID = header_of(GOOD)["kid"]
_, GOOD_PAYLOAD, GOOD_SIGNATURE = GOOD.split(".")
PUBLIC_PEM = (
    RING.verification_keys[KID][1].as_pem(private=False)  # type: ignore[union-attr]
)


def hs256_with_public_key() -> str:
    # Built by hand, as an attacker would: the library refuses to make it.
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'at+jwt', 'kid': KID})}.{GOOD_PAYLOAD}"
    mac = hmac.new(PUBLIC_PEM, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def foreign_key_token(**header_extra: Any) -> str:
    attacker = ECKey.import_key(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    header = {"alg": "ES256", "typ": "at+jwt", "kid": KID, **header_extra}
    return jwt.encode(header, claims_of(GOOD), attacker, algorithms=["ES256"])


ATTACKS: dict[str, str] = {
    "alg none": reheader(GOOD, alg="none", typ="at+jwt", kid=KID).rsplit(".", 1)[0] + ".",
    "alg None keeps signature": reheader(GOOD, alg="None", typ="at+jwt", kid=KID),
    "alg nOnE": reheader(GOOD, alg="nOnE", typ="at+jwt", kid=KID),
    "alg missing": reheader(GOOD, typ="at+jwt", kid=KID),
    "alg null": reheader(GOOD, alg=None, typ="at+jwt", kid=KID),
    "empty header": reheader(GOOD),
    "relabelled ES384": reheader(GOOD, alg="ES384", typ="at+jwt", kid=KID),
    "hs256 with the public key": hs256_with_public_key(),
    "kid traversal": reheader(GOOD, alg="ES256", typ="at+jwt", kid="../../../../dev/null"),
    "kid injection": reheader(GOOD, alg="ES256", typ="at+jwt", kid="x' UNION SELECT 'k' --"),
    "kid 10 KB": reheader(GOOD, alg="ES256", typ="at+jwt", kid="k" * 10_000),
    "kid number": reheader(GOOD, alg="ES256", typ="at+jwt", kid=5),
    "kid object": reheader(GOOD, alg="ES256", typ="at+jwt", kid={"a": 1}),
    "unknown kid": reheader(GOOD, alg="ES256", typ="at+jwt", kid="nope"),
    "jku": foreign_key_token(jku="http://127.0.0.1:9/jwks"),
    "x5u": foreign_key_token(x5u="http://127.0.0.1:9/cert"),
    "embedded jwk": foreign_key_token(jwk={"kty": "EC"}),
    "x5c": foreign_key_token(x5c=["MIIB"]),
    "signed by a key not ours": foreign_key_token(),
    "signature stripped": f"{GOOD.rsplit('.', 1)[0]}.",
    "two segments": GOOD.rsplit(".", 1)[0],
    "payload edited": GOOD.split(".")[0]
    + f".{b64({**claims_of(GOOD), 'sub': 'admin'})}.{GOOD_SIGNATURE}",
    "psychic signature": f"{GOOD.rsplit('.', 1)[0]}.{b64(bytes(64))}",
    "typ absent": reheader(GOOD, alg="ES256", kid=KID),
    "typ JWT": reheader(GOOD, alg="ES256", typ="JWT", kid=KID),
    "typ dpop+jwt": reheader(GOOD, alg="ES256", typ="dpop+jwt", kid=KID),
    "crit empty": reheader(GOOD, alg="ES256", typ="at+jwt", kid=KID, crit=[]),
    "crit foo": reheader(GOOD, alg="ES256", typ="at+jwt", kid=KID, crit=["foo"]),
    "100 KB token": GOOD + "A" * 100_000,
    "nested header": b64(b"[" * 50_000 + b"]" * 50_000) + "." + GOOD_PAYLOAD + "." + GOOD_SIGNATURE,
    "garbage": "not.a.jwt",
    "header of 2 KB": b64({"alg": "ES256", "typ": "at+jwt", "kid": KID, "x": "y" * 2000})
    + f".{GOOD_PAYLOAD}.{GOOD_SIGNATURE}",
    "header is an array": f"{b64([1])}.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}",
    "refresh token as bearer": "kt_rt_" + "A" * 79,
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_jv_forged_and_malformed_tokens_are_refused(name: str) -> None:
    with pytest.raises(InvalidAccessToken):
        check(RING, ATTACKS[name])


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"issuer": "https://evil.test"}, "issuer"),
        ({"audience": "other"}, "audience"),
        ({"expires_at": NOW - timedelta(seconds=31)}, "expired"),
        ({"issued_at": NOW + timedelta(hours=1), "expires_at": NOW + timedelta(hours=2)}, "iat"),
    ],
)
def test_jv_wrong_claims_are_refused(changes: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidAccessToken):
        check(RING, token(RING, **changes))


def test_jv11_leeway_accepts_a_just_expired_token() -> None:
    check(RING, token(RING, expires_at=NOW - timedelta(seconds=25)))


def test_jv16_typ_variants_are_accepted() -> None:
    for typ in ("at+jwt", "application/at+jwt", "AT+JWT"):
        value = jwt.encode(
            {"alg": "ES256", "typ": typ, "kid": KID},
            claims_of(GOOD),
            _signing_key(),
            algorithms=["ES256"],
        )
        check(RING, value)


def _signing_key() -> Any:
    assert RING.signing is not None
    return RING.signing.key


def _signed(claims: dict[str, Any]) -> str:
    return jwt.encode(
        {"alg": "ES256", "typ": "at+jwt", "kid": KID}, claims, _signing_key(), algorithms=["ES256"]
    )


@pytest.mark.parametrize("name", ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"])
def test_jv15_each_required_claim_is_required(name: str) -> None:
    claims = dict(claims_of(GOOD))
    del claims[name]
    with pytest.raises(InvalidAccessToken):
        check(RING, _signed(claims))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("exp", None),
        ("exp", "9999999999"),
        ("exp", True),
        ("exp", 1e30),
        ("exp", 1e300),
        ("nbf", int((NOW + timedelta(minutes=5)).timestamp())),
        ("aud", {"a": "api"}),
        ("aud", ""),
        ("aud", ["other"]),
        ("scope", ["read"]),
        ("sub", 5),
    ],
)
def test_jv18_claim_type_confusion_is_refused(name: str, value: Any) -> None:
    claims = {**claims_of(GOOD), name: value}
    with pytest.raises(InvalidAccessToken):
        check(RING, _signed(claims))


def test_jv14_an_audience_array_containing_ours_is_accepted() -> None:
    check(RING, _signed({**claims_of(GOOD), "aud": ["other", "api"]}))


def test_lifetime_longer_than_the_issuer_signs_is_refused() -> None:
    with pytest.raises(InvalidAccessToken):
        check(RING, GOOD, max_lifetime=60)
