"""The DPoP replay caches (RFC 9449 §11.1): bounded process memory, and Redis shared by
every process."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from keyturn.core.dpop import BoundedProofReplayCache
from keyturn.core.dpop_errors import InvalidDpopProof
from keyturn.core.errors import StoreUnavailable
from keyturn.crypto.dpop import DpopVerifier
from keyturn.storage.dpop_replay import MemoryProofReplayCache, RedisProofReplayCache
from support.dpop_proofs import NOW, URI, Client


class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def __call__(self) -> datetime:
        return self.at


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


# Memory


async def test_a_key_is_new_once_then_seen_until_it_expires() -> None:
    clock = Clock()
    cache = MemoryProofReplayCache(clock=clock)
    assert await cache.first_use("k", later(10))
    assert not await cache.first_use("k", later(10))
    clock.at = later(10)  # at its expiry, still remembered
    assert not await cache.first_use("k", later(20))
    clock.at = later(10.001)
    assert await cache.first_use("k", later(20))
    assert len(cache) == 1


async def test_a_full_cache_refuses_new_keys_rather_than_forget_live_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    cache = MemoryProofReplayCache(max_entries=3, clock=clock)
    for key in ("a", "b", "c"):
        assert await cache.first_use(key, later(60))
    with caplog.at_level(logging.WARNING, logger="keyturn.dpop"):
        assert not await cache.first_use("d", later(60))
        assert not await cache.first_use("e", later(60))
    # One warning for the flood, not one per proof.
    assert [r.message for r in caplog.records] == [
        "DPoP replay cache full: refusing new proofs until some expire"
    ]
    # The live ones are all still remembered.
    for key in ("a", "b", "c"):
        assert not await cache.first_use(key, later(60))
    assert len(cache) == 3


async def test_expired_keys_make_room_first_oldest_expiry_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    cache = MemoryProofReplayCache(max_entries=3, clock=clock)
    assert await cache.first_use("short", later(5))
    assert await cache.first_use("long", later(60))
    assert await cache.first_use("mid", later(30))
    assert not await cache.first_use("new", later(60))
    clock.at = later(6)
    assert await cache.first_use("new", later(66))
    assert not await cache.first_use("long", later(60))
    assert not await cache.first_use("mid", later(30))
    assert len(cache) == 3
    # Full again, then free again: the warning comes back for the next flood.
    with caplog.at_level(logging.WARNING, logger="keyturn.dpop"):
        assert not await cache.first_use("x", later(60))
        clock.at = later(31)
        assert await cache.first_use("x", later(90))
        assert not await cache.first_use("y", later(90))
    assert len(caplog.records) == 3  # "new" at first, "x", then "y"


async def test_concurrent_first_uses_of_one_key_let_exactly_one_through() -> None:
    cache = MemoryProofReplayCache()
    expiry = datetime.now(UTC) + timedelta(minutes=1)
    answers = await asyncio.gather(*(cache.first_use("k", expiry) for _ in range(50)))
    assert answers.count(True) == 1


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryProofReplayCache(max_entries=0)
    with pytest.raises(ValueError, match="max_entries"):
        BoundedProofReplayCache(Clock(), 0)


# Redis


@pytest.fixture
async def redis_cache(redis_url: str) -> AsyncIterator[RedisProofReplayCache]:
    cache = RedisProofReplayCache(redis_url, prefix=f"test:dpop:{secrets.token_hex(6)}:")
    yield cache
    await cache.close()


@pytest.mark.redis
async def test_redis_a_key_is_new_once_then_seen_until_it_expires(
    redis_cache: RedisProofReplayCache,
) -> None:
    expiry = datetime.now(UTC) + timedelta(milliseconds=300)
    assert await redis_cache.first_use("k", expiry)
    assert not await redis_cache.first_use("k", expiry)
    await asyncio.sleep(0.5)
    assert await redis_cache.first_use("k", datetime.now(UTC) + timedelta(minutes=1))


@pytest.mark.redis
async def test_redis_concurrent_first_uses_from_two_processes_let_exactly_one_through(
    redis_url: str,
) -> None:
    prefix = f"test:dpop:{secrets.token_hex(6)}:"
    first, second = (RedisProofReplayCache(redis_url, prefix=prefix) for _ in range(2))
    expiry = datetime.now(UTC) + timedelta(minutes=1)
    try:
        answers = await asyncio.gather(
            *(cache.first_use("k", expiry) for cache in (first, second) for _ in range(20))
        )
    finally:
        await first.close()
        await second.close()
    assert answers.count(True) == 1


@pytest.mark.redis
async def test_redis_a_proof_accepted_by_one_verifier_is_refused_by_another(
    redis_url: str,
) -> None:
    prefix = f"test:dpop:{secrets.token_hex(6)}:"
    first, second = (RedisProofReplayCache(redis_url, prefix=prefix) for _ in range(2))
    now = datetime.now(UTC)
    client = Client()
    proof = client.proof(iat=int(now.timestamp()))
    try:
        one, two = DpopVerifier(first), DpopVerifier(second)
        verified = await one.verify(proof, method="POST", uri=URI, now=now)
        assert verified.jkt == client.jkt
        with pytest.raises(InvalidDpopProof, match="jti already used"):
            await two.verify(proof, method="POST", uri=URI, now=now)
    finally:
        await first.close()
        await second.close()


async def test_redis_unreachable_refuses_rather_than_guesses() -> None:
    # Port 1: nothing listens there. The replay check cannot be made, so the proof
    # is not taken (StoreUnavailable, answered 503), never waved through.
    cache = RedisProofReplayCache("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(StoreUnavailable):
            await cache.first_use("k", datetime.now(UTC) + timedelta(minutes=1))
    finally:
        await cache.close()
