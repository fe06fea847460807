"""Sealing at rest, the master secret file, Argon2id passwords, client secrets."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from keyturn.core.errors import PasswordRejected
from keyturn.crypto.client_secrets import generate_secret, hash_secret, verify_secret
from keyturn.crypto.passwords import (
    MAX_PASSWORD_LENGTH,
    Passwords,
    check_new_password,
    common_passwords,
)
from keyturn.crypto.sealing import Sealer, SealError, load_or_create_master_secret


class Random:
    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


def test_sealed_blob_opens_only_with_its_secret_and_its_key_id() -> None:
    sealer = Sealer(b"m" * 32)
    blob = sealer.seal(b"private key", "kid-1")
    assert b"private key" not in blob
    assert sealer.unseal(blob, "kid-1") == b"private key"
    with pytest.raises(SealError):
        sealer.unseal(blob, "kid-2")
    with pytest.raises(SealError):
        Sealer(b"n" * 32).unseal(blob, "kid-1")
    with pytest.raises(SealError):
        sealer.unseal(b"\x02" + blob[1:], "kid-1")


def test_master_secret_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="32"):
        Sealer(b"short")


def test_master_secret_file_is_created_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keyturn.secret"
    first = load_or_create_master_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_or_create_master_secret(path) == first


def test_master_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyturn.secret"
    load_or_create_master_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_master_secret(path)


def test_master_secret_file_too_short_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyturn.secret"
    path.write_text("short\n")
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match="32"):
        load_or_create_master_secret(path)


PASSWORDS = Passwords()


def test_pw01_hashes_are_argon2id_with_owasp_parameters_and_unique_salts() -> None:
    a = PASSWORDS.hash("the same passphrase")
    b = PASSWORDS.hash("the same passphrase")
    assert a.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert a != b
    assert PASSWORDS.verify(a, "the same passphrase")
    assert not PASSWORDS.verify(a, "another passphrase")
    assert not PASSWORDS.verify("not a hash", "x")
    assert not PASSWORDS.needs_rehash(a)
    PASSWORDS.verify_dummy("anything")


def test_pw04_long_passwords_are_verified_exactly() -> None:
    for length in (64, 128):
        password = "".join(chr(ord("a") + i % 26) for i in range(length))
        stored = PASSWORDS.hash(password)
        assert PASSWORDS.verify(stored, password)
        changed = password[:40] + "#" + password[41:]
        assert not PASSWORDS.verify(stored, changed)
    check_new_password("x" * MAX_PASSWORD_LENGTH, "alice")


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "at least"),
        ("x" * (MAX_PASSWORD_LENGTH + 1), "at most"),
        ("Alice-the-user", "username"),
        ("password1", "common"),
        ("Qwerty123", "common"),
    ],
)
def test_pw05_weak_new_passwords_are_refused(password: str, why: str) -> None:
    with pytest.raises(PasswordRejected, match=why):
        check_new_password(password, "alice-the-user")


def test_common_password_list_holds_three_thousand() -> None:
    assert len(common_passwords()) >= 2900


def test_pw06_client_secrets_are_long_random_and_stored_hashed() -> None:
    secret = generate_secret(Random())
    assert secret.startswith("kt_cs_")
    assert len(secret) - len("kt_cs_") >= 43  # 256 bits in base64url
    stored = hash_secret(secret)
    assert secret not in stored
    assert verify_secret(stored, secret)
    assert not verify_secret(stored, secret + "x")
    assert not verify_secret(stored, "\ud800")
    assert generate_secret(Random()) != secret
