"""Rate-limit counters: fixed windows, in process memory or shared through Redis.

With Redis configured, every worker process and host shares the counts. If Redis
stops answering, counting falls back to this process's memory (limits then hold per
process) and the request goes on: Redis is optional, never a reason to refuse service.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger("keyturn.limits")

MAX_KEYS = 100_000


class MemoryLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}

    def _window(self, key: str, window_seconds: int) -> tuple[int, float]:
        now = self._clock()
        count, ends = self._counts.get(key, (0, 0.0))
        if now >= ends:
            count, ends = 0, now + window_seconds
            if len(self._counts) >= MAX_KEYS:  # bounded memory under a key-spraying attack
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        return count, ends

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        count, ends = self._window(key, window_seconds)
        self._counts[key] = (count + 1, ends)
        return None if count + 1 <= limit else max(1, math.ceil(ends - self._clock()))

    async def peek(self, key: str, limit: int, window_seconds: int) -> int | None:
        count, ends = self._window(key, window_seconds)
        return None if count < limit else max(1, math.ceil(ends - self._clock()))


class RedisLimiter:
    def __init__(self, url: str, fallback: MemoryLimiter | None = None) -> None:
        # Imported here: a server without Redis never loads the client (memory per worker).
        from redis import asyncio as aioredis
        from redis.exceptions import RedisError

        self._redis = aioredis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._failures: tuple[type[Exception], ...] = (RedisError, OSError)
        self._fallback = fallback or MemoryLimiter()

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        name = f"keyturn:rl:{key}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, window_seconds, nx=True)
                pipe.ttl(name)
                count, _, ttl = await pipe.execute()
        except self._failures as error:
            log.warning("redis unavailable for rate limits, counting per process: %s", error)
            return await self._fallback.hit(key, limit, window_seconds)
        return None if int(count) <= limit else max(1, int(ttl))

    async def peek(self, key: str, limit: int, window_seconds: int) -> int | None:
        name = f"keyturn:rl:{key}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.ttl(name)
                count, ttl = await pipe.execute()
        except self._failures as error:
            log.warning("redis unavailable for rate limits, counting per process: %s", error)
            return await self._fallback.peek(key, limit, window_seconds)
        return None if count is None or int(count) < limit else max(1, int(ttl))

    async def close(self) -> None:
        await self._redis.aclose()
