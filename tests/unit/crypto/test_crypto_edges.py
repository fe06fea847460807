"""Crypto rules at their edges, with real keys: a DPoP-bound access token names its key
(RFC 9449 §6.1), the issuer's own check of any audience it issued, NumericDates that
are not integers, opened keys remembered between rings, the DPoP nonce key, and the key
id a refresh token names."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyturn.core import key_lifecycle
from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import SessionId
from keyturn.core.models import KeyUse, StoredKey
from keyturn.crypto.access_tokens import InvalidAccessToken, claim_times, mint, verify
from keyturn.crypto.dpop import nonce_key_from
from keyturn.crypto.keys import KeyRing, OpenedKeys, new_refresh_mac_key, new_signing_key
from keyturn.crypto.refresh_codec import RefreshClaims, encode, key_id_of
from keyturn.crypto.sealing import Sealer

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SEALER = Sealer(b"m" * 32)
ISS = "https://as.test"
JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


class Random:
    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


def keys() -> list[StoredKey]:
    signing = key_lifecycle.plan_bootstrap(
        [], KeyUse.SIGNING, NOW, lambda now, _: new_signing_key("ES256", SEALER, now)
    )
    mac = key_lifecycle.plan_bootstrap(
        signing,
        KeyUse.REFRESH_MAC,
        NOW,
        lambda now, existing: new_refresh_mac_key(
            key_lifecycle.next_mac_key_id(existing), SEALER, Random(), now
        ),
    )
    return signing + mac


def test_a_token_bound_to_a_dpop_key_names_its_thumbprint_in_cnf() -> None:
    ring = KeyRing(keys(), SEALER, NOW)
    token = mint(
        ring,
        issuer=ISS,
        subject="user-1",
        audience="api",
        client_id="native",
        scope="read",
        session_id=None,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=15),
        jti=secrets.token_hex(16),
        key_thumbprint=JKT,
    )
    claims = verify(token, ring.verification_keys, issuer=ISS, audience="api", now=NOW)
    assert claims["cnf"] == {"jkt": JKT}
    assert "sid" not in claims


def claims(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "iss": ISS,
        "sub": "user-1",
        "aud": "api",
        "exp": int(NOW.timestamp()) + 900,
        "iat": int(NOW.timestamp()),
        "jti": "j",
        "client_id": "native",
        "scope": "read",
    }
    values.update(changes)
    return values


@pytest.mark.parametrize("aud", ["api", ["other", "api"]])
def test_the_issuer_accepts_any_audience_it_issued(aud: str | list[str]) -> None:
    exp, _ = claim_times(claims(aud=aud), ISS, None, NOW.timestamp(), 30)
    assert exp == int(NOW.timestamp()) + 900


@pytest.mark.parametrize("aud", ["", [], [""], [7]])
def test_the_issuer_refuses_a_token_naming_no_audience(aud: object) -> None:
    with pytest.raises(InvalidAccessToken, match="wrong audience"):
        claim_times(claims(aud=aud), ISS, None, NOW.timestamp(), 30)


def test_numeric_dates_written_as_floats_are_read_as_whole_seconds() -> None:
    at = NOW.timestamp()
    exp, not_before = claim_times(claims(exp=at + 900.5, iat=at - 0.5), ISS, "api", at, 30)
    assert (exp, not_before) == (int(at + 900.5), int(at - 0.5))


def test_a_ring_built_again_from_unchanged_keys_opens_nothing() -> None:
    stored = keys()
    opened = OpenedKeys(SEALER)
    first = KeyRing(stored, SEALER, NOW, opened=opened)
    count = opened.opened
    assert count >= 2
    again = KeyRing(stored, SEALER, NOW, opened=opened)
    assert opened.opened == count
    assert again.refresh_mac_keys == first.refresh_mac_keys
    assert again.verification_keys.keys() == first.verification_keys.keys()


def test_keys_no_longer_stored_are_forgotten_and_opened_again_if_they_return() -> None:
    stored = keys()
    opened = OpenedKeys(SEALER)
    KeyRing(stored, SEALER, NOW, opened=opened)
    count = opened.opened
    opened.keep_only([])
    KeyRing(stored, SEALER, NOW, opened=opened)
    assert opened.opened == 2 * count


def test_the_dpop_nonce_key_is_derived_from_the_master_secret_alone() -> None:
    key = nonce_key_from(b"m" * 32)
    assert len(key) == 32
    assert key == nonce_key_from(b"m" * 32)
    assert key != nonce_key_from(b"n" * 32)
    assert key != b"m" * 32


def test_a_refresh_tokens_key_id_is_read_without_its_mac_and_only_from_a_token() -> None:
    sid = SessionId(str(uuid.UUID(int=12345, version=4)))
    token = encode(RefreshClaims(sid, 5, b"saltsalt", 513), b"k" * 32)
    assert key_id_of(token) == 513
    with pytest.raises(InvalidGrant):
        key_id_of("kt_rt_not-a-token")
