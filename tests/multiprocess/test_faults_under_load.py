"""Faults under load, against real processes: a `keyturn serve` worker SIGKILLed
mid-rotation, PostgreSQL stopped, Redis stopped, SQLite's disk full, turned read-only
or gone. Each scenario is `bench.faults.scenarios`, run here short; `python -m
bench.faults` runs them longer and writes the figures. A scenario's violations are
the rules it saw broken: never a 500, never a 200 with a token that was not stored,
no session ended by reuse or forked, 503 `temporarily_unavailable` with `Retry-After`
while a store is away, recovery when it returns.

Components a test stops are its own (a PostgreSQL cluster it initdb's, a redis-server,
a small filesystem it mounts); the shared PostgreSQL only ever gets a schema of the
test's own.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bench.faults import scenarios
from bench.faults.seed import prepare
from bench.faults.services import PrivateRedis, can_mount, postgres_binaries

from keyturn.core.ids import ClientId, SessionId
from keyturn.core.models import EndedSession, RevocationReason
from keyturn.storage.dpop_replay import RedisProofReplayCache
from keyturn.storage.limits import RedisLimiter
from keyturn.storage.revocation_channel import RedisRevocationChannel
from support.availability import missing

pytestmark = pytest.mark.slow


def _show(result: scenarios.Result) -> str:
    return "\n".join([*result.violations[:20], repr(result.figures)])


@pytest.mark.parametrize("db_delay", [0.0, 0.005], ids=["db_direct", "db_5ms_away"])
def test_fault_crash_mid_rotation_every_chain_continues_and_no_session_forks(
    db_delay: float, postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    # 16 devices, each its own session, against serve --workers 2; 20 worker kills.
    # With PostgreSQL's answers 5 ms away, most kills land between a rotation's commit
    # and its answer: the device's retry must be answered as a replay.
    database = prepare(postgres_url, pg_schema)
    result = scenarios.crash_mid_rotation(
        database, tmp_path, devices=16, kills=20, db_delay=db_delay
    )
    assert result.violations == [], _show(result)
    figures = result.figures
    assert figures["kills"] == 20
    assert figures["chains_continued"] == "16/16"
    # The kills did land mid-request: some requests went unanswered and were retried.
    assert figures["requests_failed_during_a_kill"] > 0, figures
    assert figures["retried_then_answered_200"] > 0, figures
    if db_delay:
        assert sum(figures["replays_recorded"].values()) > 0, figures


def _need_postgres_binaries() -> None:
    if postgres_binaries() is None:
        missing("PostgreSQL server binaries", "/usr/lib/postgresql/*/bin", "install postgresql")


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_fault_postgres_stopped_answers_503_within_a_second_and_recovers_without_restart(
    mode: str, tmp_path: Path
) -> None:
    _need_postgres_binaries()
    result = scenarios.postgres_stopped(mode, tmp_path, devices=4, outage=3.0)
    assert result.violations == [], _show(result)
    figures = result.figures
    assert figures["first_503_after_stop_ms"] <= 1000
    during = figures["answers_during_outage_by_status"]
    assert set(during) == {"rotation", "login", "introspection", "readyz"}, during
    assert all(set(counts) == {"503"} for counts in during.values()), during
    # A request during the outage waits at most about the database timeout (1 s).
    assert figures["max_latency_during_outage_ms"] < 2500
    assert all(ms is not None for ms in figures["first_200_after_start_command_ms"].values())
    assert figures["chains_continued"] == "4/4"


def test_fault_redis_stopped_limits_fall_back_per_process_and_are_shared_again(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        missing("redis-server", "PATH", "install redis-server")
    database = prepare(postgres_url, pg_schema)
    result = scenarios.redis_stopped(database, tmp_path, limit=20)
    assert result.violations == [], _show(result)
    figures = result.figures
    assert figures["probe_with_redis"]["next_at_b"] == 429
    assert figures["probe_without_redis"]["next_at_b"] == 400
    assert figures["probe_without_redis"]["next_at_a"] == 429
    assert figures["probe_redis_back"]["next_at_b"] == 429
    assert figures["answers_while_redis_away"] > 0
    assert figures["answers_not_200"] == 0
    # Said once per server when Redis went away, once when it came back.
    assert 1 <= figures["log_warnings"] <= 2, figures
    assert 1 <= figures["log_shared_again"] <= 2, figures


def _need_mount(kind: str) -> None:
    why = can_mount(kind)
    if why is not None:
        missing(f"a {kind} mount", "this machine", why)


@pytest.mark.parametrize("fault", ["full", "read_only", "gone"])
def test_fault_sqlite_disk_answers_503_keeps_every_answered_token_and_restarts_clean(
    fault: str, tmp_path: Path
) -> None:
    _need_mount("tmpfs" if fault == "full" else "ext4")
    result = scenarios.sqlite_disk(fault, tmp_path, devices=4, outage=3.0)
    assert result.violations == [], _show(result)
    figures = result.figures
    assert figures["integrity_check"] == "ok"
    assert figures["writes_503_during_fault"] > 0
    assert figures["chains_continued"] == "4/4"


async def test_fault_redis_stopped_and_back_the_first_command_on_an_old_connection_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection opened before Redis restarted is dead; using it must not be the
    request's failure: the DPoP proof refused with 503, the revocation never announced
    to the resource servers that follow the channel, the limit counted per process."""
    if shutil.which("redis-server") is None:
        missing("redis-server", "PATH", "install redis-server")
    redis = PrivateRedis()
    redis.start()
    cache = RedisProofReplayCache(redis.url)
    limiter = RedisLimiter(redis.url)
    channel = RedisRevocationChannel(redis.url)
    soon = datetime.now(UTC) + timedelta(minutes=1)
    ended = [EndedSession(SessionId("s1"), ClientId("c1"))]
    try:
        # One pooled connection each, opened while Redis is up.
        assert await cache.first_use("before", soon)
        assert await limiter.hit("k", 100, 60) is None
        await channel.revoked(ended, RevocationReason.LOGOUT, soon)
        redis.stop()
        redis.start()  # the same port, a new server: every old connection is closed
        caplog.clear()
        assert await cache.first_use("after", soon)
        assert await limiter.hit("k2", 100, 60) is None
        await channel.revoked(ended, RevocationReason.LOGOUT, soon)
        assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []
        assert redis.command("GET", "keyturn:rl:k2").strip() == b"1"
    finally:
        for client in (cache, limiter, channel):
            await client.close()
        redis.stop()


async def test_fault_redis_stopped_limits_warn_once_per_outage_not_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Counting per process is said once when it begins and once when it ends: a
    warning per request would be thousands a second under load."""
    if shutil.which("redis-server") is None:
        missing("redis-server", "PATH", "install redis-server")
    caplog.set_level(logging.INFO, logger="keyturn.limits")
    redis = PrivateRedis()
    redis.start()
    limiter = RedisLimiter(redis.url)
    try:
        assert await limiter.hit("k", 1000, 60) is None
        redis.stop()
        caplog.clear()
        for _ in range(50):
            assert await limiter.hit("k", 1000, 60) is None
            assert await limiter.peek("k", 1000, 60) is None
        said = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert len(said) == 1, said
        assert said[0][0] == "WARNING"
        assert "counting per process" in said[0][1]
        redis.start()
        caplog.clear()
        assert await limiter.hit("k", 1000, 60) is None
        said = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert len(said) == 1, said
        assert "shared again" in said[0][1]
    finally:
        await limiter.close()
        redis.stop()
