"""The in-process rate limiter under key spraying (H-06): a new key costs the same with
a thousand live keys as with the cap of them, and memory stays bounded."""

from __future__ import annotations

import time

import pytest

from keyturn.storage import limits
from keyturn.storage.limits import MAX_KEYS, MemoryLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _fill(limiter: MemoryLimiter, n: int) -> None:
    for i in range(n):
        await limiter.hit(f"live-{i}", 5, 60)


async def _cost_of_new_keys(limiter: MemoryLimiter, round: int, n: int = 200) -> float:
    """Seconds per hit of a key never seen before (a sprayed client id or username)."""
    started = time.perf_counter()
    for i in range(n):
        await limiter.hit(f"sprayed-{round}-{i}", 5, 60)
    return (time.perf_counter() - started) / n


async def test_h06_new_key_cost_does_not_grow_with_live_keys() -> None:
    small, full = MemoryLimiter(Clock()), MemoryLimiter(Clock())
    await _fill(small, 1_000)
    await _fill(full, MAX_KEYS)  # at the cap, every key still in its window
    at_1k = min([await _cost_of_new_keys(small, r) for r in range(3)])
    at_cap = min([await _cost_of_new_keys(full, r) for r in range(3)])
    # Generous: an O(n) rebuild per new key is ~1000x here, O(1) stays near 1x.
    assert at_cap < 10 * at_1k + 20e-6, (at_1k, at_cap)
    assert len(full) <= MAX_KEYS


async def test_h06_memory_stays_bounded_and_live_counts_survive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_KEYS", 100)
    clock = Clock()
    limiter = MemoryLimiter(clock)
    # An account lockout counter (a long window), then a spray of minute-long keys.
    for _ in range(3):
        await limiter.hit("login-failures:alice", 3, 900)
    for i in range(1_000):
        await limiter.hit(f"sprayed-{i}", 5, 60)
    assert len(limiter) <= 100
    # The spray evicts the windows that end first, never the lockout that ends last.
    assert await limiter.peek("login-failures:alice", 3, 900) is not None


async def test_h06_expired_windows_are_dropped_as_time_passes() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    for i in range(50):
        await limiter.hit(f"k{i}", 5, 1)
    await limiter.hit("long", 5, 60)
    clock.now += 2
    await limiter.hit("new", 5, 1)
    assert len(limiter) == 2  # "long" and "new"
    assert await limiter.peek("k0", 1, 1) is None


async def test_h06_a_window_restarted_counts_from_one() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    assert [await limiter.hit("a", 2, 10) for _ in range(3)] == [None, None, 10]
    clock.now += 10
    assert await limiter.hit("a", 2, 10) is None
    assert await limiter.hit("a", 2, 10) is None
    assert await limiter.hit("a", 2, 10) == 10
