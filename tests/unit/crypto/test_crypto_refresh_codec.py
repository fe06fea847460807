"""The refresh-token format: round trips, and refusal of everything else (RT-09)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import SessionId
from keyturn.crypto import refresh_codec
from keyturn.crypto.refresh_codec import RefreshClaims, decode, encode, salt_matches

KEY = b"k" * 32
KEYS = {1: KEY}
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def claims(generation: int = 5, key_id: int = 1) -> RefreshClaims:
    return RefreshClaims(
        session_id=SessionId(str(uuid.UUID(int=12345, version=4))),
        generation=generation,
        salt=b"saltsalt",
        mac_key_id=key_id,
    )


TOKEN = encode(claims(), KEY)


@given(
    sid=st.uuids(version=4),
    generation=st.integers(min_value=0, max_value=2**32 - 1),
    salt=st.binary(min_size=8, max_size=8),
    key_id=st.integers(min_value=0, max_value=65535),
)
def test_round_trip(sid: uuid.UUID, generation: int, salt: bytes, key_id: int) -> None:
    original = RefreshClaims(SessionId(str(sid)), generation, salt, key_id)
    token = encode(original, KEY)
    assert token.startswith("kt_rt_")
    assert decode(token, {key_id: KEY}) == original


def test_encoding_is_deterministic_so_a_replay_is_identical() -> None:
    assert encode(claims(), KEY) == encode(claims(), KEY)
    assert encode(claims(6), KEY) != TOKEN


def test_every_single_character_change_is_refused() -> None:
    prefix = len("kt_rt_")
    for i in range(prefix, len(TOKEN)):
        for replacement in {"A", "B", "_", "9"} - {TOKEN[i]}:
            changed = TOKEN[:i] + replacement + TOKEN[i + 1 :]
            with pytest.raises(InvalidGrant):
                decode(changed, KEYS)


def test_prefix_changes_and_truncations_are_refused() -> None:
    for bad in ("kt_RT_" + TOKEN[6:], "xx" + TOKEN[2:], TOKEN[:-1], TOKEN + "A", ""):
        with pytest.raises(InvalidGrant):
            decode(bad, KEYS)


@settings(max_examples=300)
@given(st.text())
def test_arbitrary_text_is_refused_with_invalid_grant_only(text: str) -> None:
    with pytest.raises(InvalidGrant):
        decode(text, KEYS)


@given(st.text(alphabet=ALPHABET, min_size=79, max_size=79))
def test_random_tokens_of_the_right_shape_are_refused(body: str) -> None:
    with pytest.raises(InvalidGrant):
        decode("kt_rt_" + body, KEYS)


@pytest.mark.parametrize("hostile", ["kt_rt_\x00" + "A" * 78, "kt_rt_" + "é" * 79, 5, None])
def test_hostile_values_are_refused(hostile: object) -> None:
    with pytest.raises(InvalidGrant):
        decode(hostile, KEYS)  # type: ignore[arg-type]


def test_a_token_under_another_key_is_refused() -> None:
    with pytest.raises(InvalidGrant) as refused:
        decode(encode(claims(), b"x" * 32), KEYS)
    assert refused.value.detail == "refresh token mac"


def test_an_unknown_key_id_says_so_for_a_reload() -> None:
    with pytest.raises(InvalidGrant) as refused:
        decode(encode(claims(key_id=9), KEY), KEYS)
    assert refused.value.detail == refresh_codec.UNKNOWN_KEY


def test_another_version_is_refused() -> None:
    import base64
    import binascii
    import struct

    raw = base64.urlsafe_b64decode(TOKEN[6:] + "=")
    body = b"\x02" + raw[1:-4]
    forged = body + struct.pack(">I", binascii.crc32(body))
    text = "kt_rt_" + base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    with pytest.raises(InvalidGrant) as refused:
        decode(text, KEYS)
    assert refused.value.detail == "refresh token version"


def test_encode_refuses_out_of_range_values() -> None:
    with pytest.raises(ValueError, match="generation"):
        encode(claims(generation=2**32), KEY)
    with pytest.raises(ValueError, match="salt"):
        encode(RefreshClaims(claims().session_id, 0, b"short", 1), KEY)


def test_salt_matches() -> None:
    assert salt_matches(claims(), b"saltsalt")
    assert not salt_matches(claims(), b"saltsalx")


def test_new_salt_is_eight_random_bytes() -> None:
    class Random:
        def token_bytes(self, n: int) -> bytes:
            return bytes(range(n))

    assert refresh_codec.new_salt(Random()) == bytes(range(8))


def test_token_carries_at_least_128_bits_of_mac() -> None:
    assert refresh_codec.MAC_BYTES * 8 >= 128
