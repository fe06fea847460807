"""H-17: the one rule for a master secret (`master_secret_weakness`), whatever its
source: at least 32 characters and about 112 bits by a conservative estimate."""

from __future__ import annotations

import base64
import os
import secrets
import string
from pathlib import Path

import pytest

from keyturn.crypto.sealing import (
    MIN_SECRET_BITS,
    WeakMasterSecret,
    estimated_bits,
    load_or_create_master_secret,
    master_secret_weakness,
)
from keyturn.settings import Settings


@pytest.mark.parametrize(
    "weak",
    [
        "a" * 64,
        "ab" * 32,
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "9876543210zyxwvutsrqponmlkjihgfedcba",
        "password" * 4,
        "passwordpasswordpasswordpassword1234",
        "Tr0ub4dor&3-Tr0ub4dor&3-Tr0ub4dor&3",
        "e2e-master-secret-" + "x" * 20,
        "my secret is secret and my secret is long",
    ],
)
def test_h17_predictable_secrets_are_refused(weak: str) -> None:
    reason = master_secret_weakness(weak)
    assert reason is not None
    assert "predictable" in reason
    assert "openssl rand" in reason


def test_h17_short_secret_is_refused_for_its_length() -> None:
    reason = master_secret_weakness(secrets.token_urlsafe(16)[:31])
    assert reason is not None
    assert "at least 32 characters" in reason


@pytest.mark.parametrize(
    "make",
    [
        lambda: base64.b64encode(secrets.token_bytes(32)).decode(),  # openssl rand -base64 32
        lambda: secrets.token_hex(32),  # openssl rand -hex 32
        lambda: secrets.token_urlsafe(32),
        lambda: "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40)),
    ],
)
def test_h17_generated_secrets_pass(make: object) -> None:
    for _ in range(200):
        value = make()  # type: ignore[operator]
        assert master_secret_weakness(value) is None, (value, estimated_bits(value))


def test_h17_long_passphrase_passes() -> None:
    assert master_secret_weakness("correct horse battery staple and more words") is None
    assert master_secret_weakness("The quick brown fox jumps over the lazy dog") is None


def test_h17_estimate_is_bounded_for_a_huge_secret() -> None:
    assert estimated_bits("a" * 200_000) == 0
    assert estimated_bits(secrets.token_urlsafe(10_000)) >= MIN_SECRET_BITS


def test_h17_weak_secret_in_settings_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="secret_key is refused") as refused:
        Settings(secret_key="k" * 40)
    assert "k" * 40 not in str(refused.value)


def test_h17_postgres_settings_without_secret_are_refused() -> None:
    with pytest.raises(ValueError, match="KEYTURN_SECRET_KEY_FILE"):
        Settings(database_url="postgresql://db.example/keyturn")
    Settings(database_url="postgresql://db.example/keyturn", secret_key_file=Path("/x"))
    Settings(database_url="sqlite:///keyturn.db")


def test_h17_weak_secret_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyturn.secret"
    path.write_text("x" * 48 + "\n")
    os.chmod(path, 0o600)
    with pytest.raises(WeakMasterSecret, match="predictable"):
        load_or_create_master_secret(path)
