"""Sealing private key material at rest with the master secret.

AES-256-GCM under a key derived from the master secret by HKDF-SHA256. The key's id is
the associated data, so a sealed blob moved to another key row does not open. The
master secret is never in the database: it comes from the settings or from a file
created on first run with mode 0600. Whatever its source, it must pass
`master_secret_weakness` (docs/decisions/key-ring-and-secret.md).
"""

from __future__ import annotations

import base64
import math
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE_BYTES = 12
_INFO = b"keyturn key sealing v1"

MIN_SECRET_CHARACTERS = 32
MIN_SECRET_BITS = 112
"""The least estimated entropy of a master secret (`estimated_bits`): the security
strength NIST SP 800-57 accepts. The estimate undercounts random text (32 random
letters and digits score about 140, 64 hex digits about 200): `openssl rand -base64 32`
and `-hex 32` always pass (none refused in 20,000 draws), 32 random letters and digits
all but about one draw in 7,000, and so does a long passphrase; repeats do not."""
_REPEAT = 3
"""A stretch of at least this many characters seen earlier in the secret counts once."""
_ANALYSED = 512
GENERATE_HINT = "generate one with: openssl rand -base64 32"


class WeakMasterSecret(ValueError):
    """A master secret too short or too predictable to seal keys with."""


def estimated_bits(secret: str) -> float:
    """A conservative estimate of the entropy of `secret`, in bits: the characters
    that are not predictable from what precedes them, each worth log2 of the number of
    distinct characters in the secret.

    A character is predictable when it repeats the one before it or is next to it in
    code points (`aaaa`, `abcd`, `4321`); a stretch of 3+ characters found earlier in
    the secret (`passwordpassword`) counts as one character. Only the first
    `_ANALYSED` characters are looked at (past them a secret gains nothing here).
    """
    text = secret[:_ANALYSED]
    distinct = len(set(text))
    if distinct < 2:
        return 0.0
    fresh, i = 0, 0
    while i < len(text):
        repeat = _repeat_at(text, i)
        if repeat:
            fresh += 1
            i += repeat
            continue
        if i == 0 or abs(ord(text[i]) - ord(text[i - 1])) > 1:
            fresh += 1
        i += 1
    return fresh * math.log2(distinct)


def _repeat_at(text: str, i: int) -> int:
    """The length of the longest stretch at `i` that starts earlier in `text` (it may
    run into itself, as `abab` does), or 0 if it is shorter than `_REPEAT`."""
    length = 0
    while i + length < len(text) and text[i : i + length + 1] in text[: i + length]:
        length += 1
    return length if length >= _REPEAT else 0


def master_secret_weakness(secret: str) -> str | None:
    """Why `secret` may not be the master secret, or None if it may. The one rule,
    for every source: the settings, a secret file, a generated one."""
    if len(secret) < MIN_SECRET_CHARACTERS:
        return f"it must be at least {MIN_SECRET_CHARACTERS} characters long; {GENERATE_HINT}"
    bits = estimated_bits(secret)
    if bits < MIN_SECRET_BITS:
        return (
            f"it is too predictable (about {bits:.0f} bits of entropy, at least "
            f"{MIN_SECRET_BITS} needed: no runs, sequences or repeated words); "
            f"{GENERATE_HINT}"
        )
    return None


class SealError(Exception):
    """A sealed blob could not be opened: a different master secret, or tampering."""


class Sealer:
    def __init__(self, master_secret: bytes) -> None:
        if len(master_secret) < 32:
            raise ValueError("the master secret must be at least 32 bytes")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            master_secret
        )
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad.encode())

    def unseal(self, blob: bytes, aad: str) -> bytes:
        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE_BYTES + 16:
            raise SealError("unknown sealed format")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, aad.encode())
        except InvalidTag:
            raise SealError(
                "a stored key cannot be opened: is this the master secret it was sealed with?"
            ) from None


def load_or_create_master_secret(path: Path) -> bytes:
    """Read the master secret from `path`, creating it (32 random bytes, mode 0600,
    atomically) if it does not exist. Refuses a file others can read."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(f"{path} is readable by others; run: chmod 600 {path}") from None
        text = path.read_text().strip()
        weakness = master_secret_weakness(text)
        if weakness is not None:
            raise WeakMasterSecret(f"the master secret in {path} is refused: {weakness}") from None
        return text.encode()
    with os.fdopen(fd, "w") as out:
        out.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n")
    return path.read_text().strip().encode()
