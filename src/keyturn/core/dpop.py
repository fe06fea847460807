"""DPoP (RFC 9449): the checks of a proof's claims that need no cryptography, the port
for remembering proof `jti`s, and a bounded in-memory memory of them.

The signature and the key are checked in `keyturn.crypto.dpop`, which calls
`check_claims` here once the JWS verifies. Everything here is pure: the time is handed
in, and every refusal is an `InvalidDpopProof` whose `detail` names the failed check.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from keyturn.core.dpop_errors import InvalidDpopProof

log = logging.getLogger("keyturn.dpop")

MAX_JTI_LENGTH = 256
"""A `jti` longer than this is refused: it is a random identifier (RFC 9449 §4.2
suggests 96 bits or more), not a place to store data."""
MAX_URI_LENGTH = 4096
MAX_NUMERIC_DATE = 2**53
DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}

# RFC 3986 §2: a URI is printable ASCII without spaces. Python's urlsplit silently drops
# tabs and newlines (WHATWG), so they are refused before it sees them.
_URI_CHARS = re.compile(r"[\x21-\x7e]+")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class ProofReplayCache(Protocol):
    """Remembers the proofs already accepted (RFC 9449 §11.1), so that each is used once."""

    async def first_use(self, jti_key: str, expires_at: datetime) -> bool:
        """True the first time `jti_key` is seen, False every later time until
        `expires_at` (after which the proof's `iat` refuses it anyway). Atomic: of two
        concurrent calls with one key, one alone gets True. A cache that cannot answer
        refuses (False) or raises; it never answers True on a guess."""
        ...


@dataclass(frozen=True, slots=True)
class ProofClaims:
    """The claims of a proof that passed `check_claims`."""

    htm: str
    htu: str
    issued_at: datetime
    jti: str
    nonce: str | None


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """A proof that passed every check of RFC 9449 §4.3 and was used for the first time.

    `jkt` is the RFC 7638 SHA-256 thumbprint (base64url) of the proof's public key: the
    value an access token bound to that key carries as `cnf.jkt` (RFC 9449 §6.1).
    """

    jkt: str
    jti: str
    issued_at: datetime
    htm: str
    htu: str


def single_proof(values: Sequence[str]) -> str:
    """The one `DPoP` header value of a request: RFC 9449 §4.3 point 1 refuses a
    request with none or with more than one (as separate fields or joined by a comma)."""
    if len(values) != 1:
        raise InvalidDpopProof(detail=f"{len(values)} DPoP header fields")
    value = values[0].strip()
    if not value or "," in value:
        raise InvalidDpopProof(detail="not exactly one proof in the DPoP header")
    return value


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(access_token: str) -> str:
    """The `ath` of a proof sent with `access_token`: base64url of the SHA-256 of its
    ASCII octets (RFC 9449 §4.2)."""
    return b64url(hashlib.sha256(access_token.encode()).digest())


def replay_key(jkt: str, jti: str) -> str:
    """The replay-cache key of a proof: its key's thumbprint and its `jti`.

    RFC 9449 §11.1 asks that a `jti` be used once; scoping it to the key means one client
    cannot block another's proofs by guessing its `jti`s. The `jti` is hashed so every
    key has one short, fixed size whatever the client sent.
    """
    return f"{jkt}.{b64url(hashlib.sha256(jti.encode()).digest())}"


def normalise_htu(uri: str) -> str:
    """`uri` as an `htu` is compared (RFC 9449 §4.3 point 9): scheme and host in lower
    case, the scheme's default port dropped, an empty path as `/`, percent-encodings in
    upper case and those of unreserved characters decoded, dot segments removed
    (RFC 3986 §6.2.2, §6.2.3), and no query or fragment (RFC 9449 §4.2).

    Refuses anything that is not an absolute `http` or `https` URI with a host and no
    user information.
    """
    if not isinstance(uri, str) or len(uri) > MAX_URI_LENGTH or not _URI_CHARS.fullmatch(uri):
        raise InvalidDpopProof(detail="htu is not a URI")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidDpopProof(detail="htu is not an http or https URI")
    try:
        port = parts.port
    except ValueError:
        raise InvalidDpopProof(detail="htu has an invalid port") from None
    host = parts.hostname
    if not host or parts.username is not None or parts.password is not None:
        raise InvalidDpopProof(detail="htu has no host, or has user information")
    authority = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        authority += f":{port}"
    return f"{scheme}://{authority}{_normalise_path(parts.path)}"


def _normalise_path(path: str) -> str:
    def case(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _remove_dot_segments(_PERCENT.sub(case, path)) or "/"


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, on the segments of an absolute path."""
    if "." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/".join(out)


def check_htm(claimed: Any, method: str) -> str:
    """RFC 9449 §4.3 point 8: `htm` is the request's method. Methods are case-sensitive
    (RFC 9110 §9.1), so `post` is not `POST`."""
    if not isinstance(claimed, str) or claimed != method:
        raise InvalidDpopProof(detail="htm does not match the request method")
    return claimed


def check_htu(claimed: Any, uri: str) -> str:
    """RFC 9449 §4.3 point 9: `htu` is the request's URI, both normalised
    (`normalise_htu`), ignoring any query and fragment."""
    if not isinstance(claimed, str):
        raise InvalidDpopProof(detail="htu missing")
    if normalise_htu(claimed) != normalise_htu(uri):
        raise InvalidDpopProof(detail="htu does not match the request URI")
    return claimed


def check_iat(claimed: Any, now: datetime, leeway: int) -> datetime:
    """RFC 9449 §4.3 point 11, §11.1: the proof was made within `leeway` seconds of
    `now`, before or after (clocks differ both ways). Returns it as a UTC datetime."""
    # bool is an int in Python; NaN, infinities and strings are not NumericDates.
    if isinstance(claimed, bool) or not isinstance(claimed, int | float):
        raise InvalidDpopProof(detail="iat missing or not a NumericDate")
    if not math.isfinite(claimed) or not 0 <= claimed < MAX_NUMERIC_DATE:
        raise InvalidDpopProof(detail="iat out of range")
    moment = now.timestamp()
    if claimed > moment + leeway:
        raise InvalidDpopProof(detail="iat in the future")
    if claimed < moment - leeway:
        raise InvalidDpopProof(detail="iat too old")
    return datetime.fromtimestamp(claimed, UTC)


def check_jti(claimed: Any) -> str:
    """RFC 9449 §4.2: `jti` is present, a string, not empty, and at most
    `MAX_JTI_LENGTH` characters."""
    if not isinstance(claimed, str) or not claimed:
        raise InvalidDpopProof(detail="jti missing")
    if len(claimed) > MAX_JTI_LENGTH:
        raise InvalidDpopProof(detail="jti too long")
    return claimed


def check_ath(claimed: Any, access_token: str) -> None:
    """RFC 9449 §4.3 point 12: a proof sent with an access token carries its hash."""
    if not isinstance(claimed, str):
        raise InvalidDpopProof(detail="ath missing")
    if not hmac.compare_digest(claimed.encode(), access_token_hash(access_token).encode()):
        raise InvalidDpopProof(detail="ath does not match the access token")


def check_claims(
    claims: Mapping[str, Any],
    *,
    method: str,
    uri: str,
    now: datetime,
    leeway: int,
    access_token: str | None = None,
) -> ProofClaims:
    """The checks of RFC 9449 §4.3 points 8 to 12 on a verified proof's claims, in the
    order cheapest first. The nonce (point 10) is left to the caller, which knows the
    server's nonces; it is returned as found (a string, or None when absent)."""
    jti = check_jti(claims.get("jti"))
    htm = check_htm(claims.get("htm"), method)
    htu = check_htu(claims.get("htu"), uri)
    issued_at = check_iat(claims.get("iat"), now, leeway)
    if access_token is not None:
        check_ath(claims.get("ath"), access_token)
    nonce = claims.get("nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise InvalidDpopProof(detail="nonce is not a string")
    return ProofClaims(htm=htm, htu=htu, issued_at=issued_at, jti=jti, nonce=nonce)


class BoundedProofReplayCache:
    """A `ProofReplayCache` in this process's memory, holding at most `max_entries` live
    keys. Thread-safe; atomic within one event loop (no await inside).

    Expired entries are dropped first, oldest expiry first. When every entry is still
    live and the cache is full, a new key is refused (`first_use` answers False) rather
    than a live one evicted: evicting would forget a proof that can still be replayed,
    while refusing only makes a client under a flood of proofs retry later. The flood
    is bounded in time, since every entry expires with its proof's `iat` window.
    """

    def __init__(self, clock: Callable[[], datetime], max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._max_entries = max_entries
        self._expiry: dict[str, datetime] = {}
        self._queue: list[tuple[datetime, str]] = []
        self._lock = threading.Lock()
        self._full = False

    def __len__(self) -> int:
        return len(self._expiry)

    async def first_use(self, jti_key: str, expires_at: datetime) -> bool:
        with self._lock:
            now = self._clock()
            self._drop_expired(now)
            if jti_key in self._expiry:
                return False
            if len(self._expiry) >= self._max_entries:
                if not self._full:
                    log.warning("DPoP replay cache full: refusing new proofs until some expire")
                    self._full = True
                return False
            self._full = False
            self._expiry[jti_key] = expires_at
            heapq.heappush(self._queue, (expires_at, jti_key))
            return True

    def _drop_expired(self, now: datetime) -> None:
        queue = self._queue
        # Each live key has one entry in the queue: a key is added again only after its
        # entry expired, and expired entries are all dropped before any key is added.
        while queue and queue[0][0] < now:
            del self._expiry[heapq.heappop(queue)[1]]


def bucket_of(now: datetime, bucket_seconds: int) -> int:
    """The number of the time bucket `now` falls in (nonces, RFC 9449 §8)."""
    return math.floor(now.timestamp() / bucket_seconds)


def replay_expiry(issued_at: datetime, leeway: int) -> datetime:
    """How long a proof's `jti` must be remembered: until its `iat` check refuses it
    anyway, plus a second so a proof exactly at the edge is still caught."""
    return issued_at + timedelta(seconds=leeway + 1)
