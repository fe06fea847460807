"""Where DPoP proof `jti`s are remembered (RFC 9449 §11.1): the `ProofReplayCache` port
of `keyturn.core.dpop`, in this process's memory or shared through Redis.

One process alone may use memory. Several processes serving the same URIs must share
Redis: a proof accepted by one process would otherwise be accepted again by another.
Unlike rate limits, this cache never falls back to memory when Redis fails: a replay
check that cannot be made refuses the request (`StoreUnavailable`), never passes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from keyturn.core.dpop import BoundedProofReplayCache
from keyturn.core.errors import StoreUnavailable
from keyturn.storage import redis_client

log = logging.getLogger("keyturn.dpop")

DEFAULT_MAX_ENTRIES = 100_000
KEY_PREFIX = "keyturn:dpop:"


def _system_now() -> datetime:
    return datetime.now(UTC)


class MemoryProofReplayCache(BoundedProofReplayCache):
    """At most `max_entries` live proofs in this process's memory. When it is full of
    live ones it refuses new proofs rather than forget a live one (see
    `BoundedProofReplayCache`): refusing is the safe side."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], datetime] = _system_now,
    ) -> None:
        super().__init__(clock, max_entries)


class RedisProofReplayCache:
    """Proofs remembered in Redis, shared by every process using the same server:
    `SET key 1 NX PXAT expiry`, one atomic command, so of two processes seeing one proof
    at once exactly one is told it is the first. Redis drops each key when its proof's
    `iat` window closes, so memory follows the rate of proofs, not their total."""

    def __init__(self, url: str, *, prefix: str = KEY_PREFIX) -> None:
        # Imported here: a server without Redis never loads the client (memory per worker).
        from redis.exceptions import RedisError

        self._redis = redis_client.connect(url)
        self._failures: tuple[type[Exception], ...] = (RedisError, OSError)
        self._prefix = prefix

    async def first_use(self, jti_key: str, expires_at: datetime) -> bool:
        try:
            stored = await self._redis.set(
                self._prefix + jti_key, b"1", nx=True, pxat=_milliseconds(expires_at)
            )
        except self._failures as error:
            log.warning("redis unavailable for the DPoP replay cache: %s", error)
            raise StoreUnavailable(detail="DPoP replay cache unreachable") from None
        return bool(stored)

    async def close(self) -> None:
        await self._redis.aclose()


def _milliseconds(moment: datetime) -> int:
    # Rounded up: the key may outlive its proof by a millisecond, never the reverse.
    return -(-round(moment.timestamp() * 1_000_000) // 1_000)
