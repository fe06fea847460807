"""Confidential client secrets: generated, shown once, stored as a hash.

A secret carries 256 bits from a CSPRNG, so a fast hash is the right one (a slow
password hash protects guessable secrets; nothing here is guessable): SHA-256,
compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from keyturn.core.ports import Randomness

PREFIX = "kt_cs_"
_SCHEME = "sha256$"


def generate_secret(randomness: Randomness) -> str:
    raw = randomness.token_bytes(32)
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def hash_secret(secret: str) -> str:
    return _SCHEME + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def verify_secret(stored_hash: str, presented: str) -> bool:
    """Constant-time check of a presented secret against its stored hash."""
    try:
        candidate = hash_secret(presented)
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(candidate.encode(), stored_hash.encode())
