"""Rate-limit counters: fixed windows, in process memory or shared through Redis.

With Redis configured, every worker process and host shares the counts. If Redis
stops answering, counting falls back to this process's memory (limits then hold per
process) and the request goes on: Redis is optional, never a reason to refuse service.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from keyturn.storage import redis_client

log = logging.getLogger("keyturn.limits")

MAX_KEYS = 100_000


class MemoryLimiter:
    """Fixed windows per key, in this process's memory, at most `MAX_KEYS` of them.

    Keys are chosen by whoever sends the request (client ids, usernames, addresses), so
    every operation is O(1) amortised whatever their number: the windows are kept in
    one queue per window length, in the order they began. With a monotonic clock the
    first of each queue is the next of its length to end, so expired windows are
    dropped from the front, and at the cap the window that ends soonest is forgotten
    (a minute's count before an account's lockout).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._queues: dict[int, OrderedDict[str, tuple[int, float]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _expire(self, now: float) -> None:
        for queue in self._queues.values():
            while queue:
                key, (_, ends) = next(iter(queue.items()))
                if ends > now:
                    break
                del queue[key]
                self._size -= 1

    def _evict_soonest(self) -> None:
        fronts = [(next(iter(q.values()))[1], q) for q in self._queues.values() if q]
        if fronts:
            min(fronts, key=lambda front: front[0])[1].popitem(last=False)
            self._size -= 1

    def _live(self, key: str, window_seconds: int, now: float) -> tuple[int, float] | None:
        queue = self._queues.get(window_seconds)
        entry = queue.get(key) if queue is not None else None
        return entry if entry is not None and now < entry[1] else None

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        now = self._clock()
        self._expire(now)
        queue = self._queues.setdefault(window_seconds, OrderedDict())
        entry = self._live(key, window_seconds, now)
        if entry is None:
            if self._size >= MAX_KEYS:  # bounded memory under a key-spraying attack
                self._evict_soonest()
            entry = (0, now + window_seconds)
            self._size += 1  # a new window joins the back of its queue
        count, ends = entry[0] + 1, entry[1]
        queue[key] = (count, ends)
        return None if count <= limit else max(1, math.ceil(ends - now))

    async def peek(self, key: str, limit: int, window_seconds: int) -> int | None:
        now = self._clock()
        entry = self._live(key, window_seconds, now)
        if entry is None or entry[0] < limit:
            return None
        return max(1, math.ceil(entry[1] - now))


class RedisLimiter:
    def __init__(self, url: str, fallback: MemoryLimiter | None = None) -> None:
        # Imported here: a server without Redis never loads the client (memory per worker).
        from redis.exceptions import RedisError

        self._redis = redis_client.connect(url)
        self._failures: tuple[type[Exception], ...] = (RedisError, OSError)
        self._fallback = fallback or MemoryLimiter()
        self._per_process = False

    def _unavailable(self, error: Exception) -> None:
        # Said once when counting per process begins, not once per request: under load
        # that would be thousands of lines a second, and the log is what the operator
        # reads during the outage.
        if not self._per_process:
            self._per_process = True
            log.warning(
                "redis unavailable for rate limits, counting per process until it answers: %s",
                error,
            )

    def _answered(self) -> None:
        if self._per_process:
            self._per_process = False
            log.info("redis answers again: rate limits are shared again")

    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        name = f"keyturn:rl:{key}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, window_seconds, nx=True)
                pipe.ttl(name)
                count, _, ttl = await pipe.execute()
        except self._failures as error:
            self._unavailable(error)
            return await self._fallback.hit(key, limit, window_seconds)
        self._answered()
        return None if int(count) <= limit else max(1, int(ttl))

    async def peek(self, key: str, limit: int, window_seconds: int) -> int | None:
        name = f"keyturn:rl:{key}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.ttl(name)
                count, ttl = await pipe.execute()
        except self._failures as error:
            self._unavailable(error)
            return await self._fallback.peek(key, limit, window_seconds)
        self._answered()
        return None if count is None or int(count) < limit else max(1, int(ttl))

    async def close(self) -> None:
        await self._redis.aclose()
