"""The DPoP proof replay cache in process memory (core.dpop.BoundedProofReplayCache,
RFC 9449 §11.1): a proof's `jti` is new once, a full cache refuses rather than forgets."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from keyturn.core.dpop import BoundedProofReplayCache

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def __call__(self) -> datetime:
        return self.at


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BoundedProofReplayCache(Clock(), max_entries=0)


async def test_a_jti_is_new_once_and_again_after_it_expired() -> None:
    clock = Clock()
    cache = BoundedProofReplayCache(clock, max_entries=4)
    assert await cache.first_use("a", later(10))
    assert not await cache.first_use("a", later(10))
    clock.at = later(11)
    assert await cache.first_use("a", later(20))
    assert len(cache) == 1


async def test_a_full_cache_refuses_new_jtis_warns_once_and_takes_them_after_expiry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    cache = BoundedProofReplayCache(clock, max_entries=2)
    assert await cache.first_use("a", later(10))
    assert await cache.first_use("b", later(20))
    with caplog.at_level(logging.WARNING, logger="keyturn.dpop"):
        assert not await cache.first_use("c", later(30))
        assert not await cache.first_use("d", later(30))
    assert [r.message for r in caplog.records].count(
        "DPoP replay cache full: refusing new proofs until some expire"
    ) == 1
    clock.at = later(15)  # "a" expired: room for one
    assert await cache.first_use("c", later(30))
    assert not await cache.first_use("b", later(20))  # still live, never evicted
    assert len(cache) == 2
