"""Rate-limit counters: in memory, and shared through a real Redis (RL-06 fallback)."""

from __future__ import annotations

import secrets

import pytest

from keyturn.storage.limits import MemoryLimiter, RedisLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_limiter_counts_per_key_and_window() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    assert [await limiter.hit("a", 3, 60) for _ in range(3)] == [None, None, None]
    assert await limiter.hit("a", 3, 60) == 60
    assert await limiter.peek("a", 3, 60) == 60
    assert await limiter.hit("b", 3, 60) is None
    clock.now += 30
    assert await limiter.peek("a", 3, 60) == 30
    clock.now += 31
    assert await limiter.peek("a", 3, 60) is None
    assert await limiter.hit("a", 3, 60) is None


async def test_memory_limiter_forgets_old_windows_when_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("keyturn.storage.limits.MAX_KEYS", 10)
    clock = Clock()
    limiter = MemoryLimiter(clock)
    for i in range(10):
        await limiter.hit(f"k{i}", 5, 1)
    clock.now += 2
    await limiter.hit("new", 5, 1)
    assert len(limiter) == 1


async def test_redis_limiter_shares_counts(redis_url: str) -> None:
    key = f"test-{secrets.token_hex(4)}"
    first, second = RedisLimiter(redis_url), RedisLimiter(redis_url)
    try:
        assert await first.hit(key, 2, 60) is None
        assert await second.hit(key, 2, 60) is None
        retry = await first.hit(key, 2, 60)
        assert retry is not None
        assert 0 < retry <= 60
        assert await second.peek(key, 2, 60) is not None
        assert await second.peek(f"{key}-other", 2, 60) is None
    finally:
        await first.close()
        await second.close()


async def test_rl06_redis_down_falls_back_to_counting_in_process() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0")
    try:
        assert await limiter.hit("k", 1, 60) is None
        assert await limiter.hit("k", 1, 60) is not None
        assert await limiter.peek("k", 1, 60) is not None
    finally:
        await limiter.close()
