"""Sealing private key material at rest with the master secret.

AES-256-GCM under a key derived from the master secret by HKDF-SHA256. The key's id is
the associated data, so a sealed blob moved to another key row does not open. The
master secret is never in the database: it comes from the settings or from a file
created on first run with mode 0600.
"""

from __future__ import annotations

import base64
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
        if len(text) < 32:
            raise ValueError(f"{path} does not hold a master secret of 32+ characters") from None
        return text.encode()
    with os.fdopen(fd, "w") as out:
        out.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n")
    return path.read_text().strip().encode()
