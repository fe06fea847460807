"""The refresh token format.

    kt_rt_ + base64url( version | mac key id | session id | generation | salt | MAC | crc32 )

    version      1 byte   (1)
    mac key id   2 bytes  big-endian: which refresh MAC key authenticated it
    session id  16 bytes  the session's UUID
    generation   4 bytes  big-endian
    salt         8 bytes  the session's salt (also in the session row)
    MAC         24 bytes  HMAC-SHA256, truncated, over a label and everything above
    checksum     4 bytes  CRC32 of everything above

Nothing of it is stored: the session row holds the generation and the salt, so the
token of any generation can be derived again (a grace-window replay answers with the
identical successor). The prefix lets secret scanners recognise a leaked token; the
checksum rejects typos and garbage, and the MAC forgeries, before any database work.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import SessionId
from keyturn.core.ports import Randomness

PREFIX = "kt_rt_"
VERSION = 1
SALT_BYTES = 8
MAC_BYTES = 24
_LABEL = b"keyturn-rt-v1"
_BODY = struct.Struct(">BH16sI8s")  # version, mac key id, session id, generation, salt
_RAW_LENGTH = _BODY.size + MAC_BYTES + 4
_TEXT_LENGTH = len(PREFIX) + len(base64.urlsafe_b64encode(bytes(_RAW_LENGTH)).rstrip(b"="))
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
MAX_GENERATION = 2**32 - 1

UNKNOWN_KEY = "unknown mac key"
"""The `detail` of the refusal for a token whose MAC key this process does not hold."""


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    session_id: SessionId
    generation: int
    salt: bytes
    mac_key_id: int


def new_salt(randomness: Randomness) -> bytes:
    return randomness.token_bytes(SALT_BYTES)


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.digest(key, _LABEL + body, "sha256")[:MAC_BYTES]


def encode(claims: RefreshClaims, mac_key: bytes) -> str:
    """The token for `claims`, authenticated with `mac_key`. Deterministic."""
    if not 0 <= claims.generation <= MAX_GENERATION:
        raise ValueError("generation out of range")
    if len(claims.salt) != SALT_BYTES:
        raise ValueError("salt must be 8 bytes")
    body = _BODY.pack(
        VERSION,
        claims.mac_key_id,
        uuid.UUID(claims.session_id).bytes,
        claims.generation,
        claims.salt,
    )
    signed = body + _mac(mac_key, body)
    raw = signed + struct.pack(">I", binascii.crc32(signed))
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(token: str, mac_keys: Mapping[int, bytes]) -> RefreshClaims:
    """Parse and authenticate `token`. Raises `InvalidGrant` (its `detail` names the
    check that failed; never the token) for anything that is not a token we issued."""
    claims, body, mac = _parse(token)
    key = mac_keys.get(claims.mac_key_id)
    if key is None:
        raise InvalidGrant(detail=UNKNOWN_KEY)
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise InvalidGrant(detail="refresh token mac")
    return claims


def key_id_of(token: str) -> int:
    """The MAC key id a well-formed token names, unauthenticated: only for deciding
    whether that key could exist. `InvalidGrant` as `decode` for a malformed token."""
    return _parse(token)[0].mac_key_id


def _parse(token: str) -> tuple[RefreshClaims, bytes, bytes]:
    """The claims, the signed body and the MAC of a well-formed token, not yet
    authenticated."""
    if not isinstance(token, str) or len(token) != _TEXT_LENGTH:
        raise InvalidGrant(detail="refresh token length")
    if not token.startswith(PREFIX):
        raise InvalidGrant(detail="refresh token prefix")
    text = token[len(PREFIX) :]
    if not _ALPHABET.fullmatch(text):
        raise InvalidGrant(detail="refresh token alphabet")
    # The alphabet and the length are checked, so this decodes.
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Canonical encoding only: trailing bits must re-encode to the same text.
    if len(raw) != _RAW_LENGTH or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise InvalidGrant(detail="refresh token encoding")
    signed, checksum = raw[:-4], raw[-4:]
    if struct.unpack(">I", checksum)[0] != binascii.crc32(signed):
        raise InvalidGrant(detail="refresh token checksum")
    body, mac = signed[: _BODY.size], signed[_BODY.size :]
    version, key_id, sid, generation, salt = _BODY.unpack(body)
    if version != VERSION:
        raise InvalidGrant(detail="refresh token version")
    claims = RefreshClaims(
        session_id=SessionId(str(uuid.UUID(bytes=sid))),
        generation=generation,
        salt=salt,
        mac_key_id=key_id,
    )
    return claims, body, mac


def salt_matches(claims: RefreshClaims, session_salt: bytes) -> bool:
    """Whether the token's salt is its session's (constant time)."""
    return hmac.compare_digest(claims.salt, session_salt)
