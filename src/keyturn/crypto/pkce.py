"""PKCE (RFC 7636): the S256 transform and the verifier check."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

# RFC 7636 §4.1: code-verifier = 43*128unreserved
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def s256(verifier: str) -> str:
    """BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) without padding (§4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str | None, challenge: str) -> bool:
    """§4.6: the server recomputes the challenge from the verifier and compares."""
    if verifier is None or not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)
