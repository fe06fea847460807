"""The tokens a `Verifier` has verified, so a token seen again costs no signature.

A client calls an API many times with one access token; its signature and its
immutable claims were checked the first time. What can change between two calls is
checked on every call by the `Verifier`, never remembered: `exp` and `nbf`/`iat`
against the clock, the revocation lookup, how the token is presented (bearer or DPoP).

The cache is keyed by the exact token string, and only a token that passed every check
enters it: garbage, forged and refused tokens never touch it, so they can neither
evict an entry nor grow it. It holds at most `size` entries; when full, the oldest
entry leaves (an older token expires sooner). Filling it takes valid tokens, one
issuer rotation each.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from keyturn.verify.verifier import AccessToken

DEFAULT_SIZE = 4096


class CachedToken(NamedTuple):
    """A verified token, and the claims each later call checks again. (A named tuple:
    immutable, and built in a third of a frozen dataclass's time.)"""

    access: AccessToken
    expires: int
    not_before: int
    """The later of `iat` and `nbf`: neither may be in the future (RFC 7519 §4.1.5)."""


class TokenCache:
    """A bounded map from token string to `CachedToken`. Lookups take no lock; entries
    added while the key set changes are dropped (see `generation`)."""

    __slots__ = ("_entries", "_lock", "generation", "get", "size")

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if size < 0:
            raise ValueError("a cache size is 0 (no cache) or more")
        self.size = size
        self._entries: dict[str, CachedToken] = {}
        self._lock = threading.Lock()
        self.generation = 0
        """Counts `clear`s: an entry verified under keys read before a clear is not
        added after it."""
        self.get = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, token: object) -> bool:
        return token in self._entries

    def put(self, token: str, entry: CachedToken, generation: int) -> None:
        """Keep `entry`, verified under the keys of `generation`, unless the keys have
        changed since; the oldest entries leave when the cache is full.

        No lock: each step is one operation on the dict, atomic under the GIL. Threads
        adding at once may hold it one entry over `size` each, until the next `put`;
        an entry added while `clear` runs is taken back (`clear` moves `generation`
        before it empties the dict)."""
        entries = self._entries
        while len(entries) >= self.size:
            if self.size == 0:
                return
            try:
                del entries[next(iter(entries))]
            except (KeyError, RuntimeError, StopIteration):  # another thread took it
                break
        entries[token] = entry
        if generation != self.generation:
            entries.pop(token, None)

    def discard(self, token: str) -> None:
        self._entries.pop(token, None)

    def clear(self) -> None:
        """Forget every entry: the key set changed, and a token verified under a key
        the issuer no longer publishes must be checked against the new set."""
        with self._lock:  # two clears at once still move the generation twice
            self.generation += 1
            self._entries.clear()
