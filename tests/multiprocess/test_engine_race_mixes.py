"""Mixed races across processes: a stale token against a rotation (FS-04), logout
against rotation (FS-05), no fork after mixed rotations and replays (FS-03), purge
during rotation (FS-16)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from engine_racer import Racers, RaceSpec

from keyturn.core.errors import InvalidGrant
from keyturn.core.models import RevocationReason, Session
from support.engine import PASSWORD, engine_with

pytestmark = pytest.mark.slow

TRIALS = 10


async def _login_and_rotate(url: str, schema: str | None, rotations: int) -> list[str]:
    """A session's tokens RT0..RTn (the last one live)."""
    engine = await engine_with(url, schema=schema)
    try:
        client = await engine.admin.get_client("native")
        tokens = [(await engine.login.login("alice", PASSWORD, client)).refresh_token or ""]
        for _ in range(rotations):
            tokens.append((await engine.refresher.refresh(tokens[-1], client)).refresh_token or "")
        return tokens
    finally:
        await engine.close()


async def _session_of(url: str, schema: str | None, token: str) -> Session:
    engine = await engine_with(url, schema=schema)
    try:
        claims = await engine.tokens.decode_refresh(token)
        session = await engine.store.get_session(claims.session_id)
        assert session is not None
        return session
    finally:
        await engine.close()


async def _try(url: str, schema: str | None, tokens: list[str]) -> list[bool]:
    engine = await engine_with(url, schema=schema)
    try:
        client = await engine.admin.get_client("native")
        results = []
        for token in tokens:
            try:
                await engine.refresher.refresh(token, client)
                results.append(True)
            except InvalidGrant:
                results.append(False)
        return results
    finally:
        await engine.close()


def test_fs04_a_stale_token_racing_a_rotation_ends_the_session(
    shared_db: tuple[str, str | None],
) -> None:
    url, schema = shared_db
    spec = RaceSpec(url, schema, grace_seconds=10, tasks_per_process=1)
    with Racers(spec, 2) as racers:
        for _ in range(TRIALS):
            tokens = asyncio.run(_login_and_rotate(url, schema, 2))
            live, stale = tokens[2], tokens[0]
            a, b = racers.race(live, stale)
            assert b == ("error", "invalid_grant")
            session = asyncio.run(_session_of(url, schema, live))
            assert session.revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
            # I3: whatever A received is dead now.
            if a[0] == "ok":
                assert asyncio.run(_try(url, schema, [a[1]])) == [False]


def test_fs05_once_logout_returns_every_token_of_a_racing_refresh_fails(
    shared_db: tuple[str, str | None],
) -> None:
    url, schema = shared_db
    spec = RaceSpec(url, schema, grace_seconds=10, tasks_per_process=2)
    with Racers(spec, 2) as racers:
        for _ in range(TRIALS):
            (token,) = asyncio.run(_login_and_rotate(url, schema, 0))
            outcomes = racers.race(("refresh", token), ("logout", token))
            assert ("ok", "logged out") in outcomes
            returned = [
                value for kind, value in outcomes if kind == "ok" and value.startswith("kt_rt_")
            ]
            assert asyncio.run(_try(url, schema, returned)) == [False] * len(returned)
            session = asyncio.run(_session_of(url, schema, token))
            assert session.revoked


def test_fs03_after_mixed_rotations_and_replays_at_most_one_token_rotates(
    shared_db: tuple[str, str | None],
) -> None:
    url, schema = shared_db
    rng = random.Random(3)  # noqa: S311 - test schedule, not a secret
    spec = RaceSpec(url, schema, grace_seconds=2, tasks_per_process=3)
    seen: set[str] = set()
    with Racers(spec, 4) as racers:
        chain = asyncio.run(_login_and_rotate(url, schema, 1))
        seen.update(chain)
        for _ in range(TRIALS):
            parent, live = chain[-2], chain[-1]
            work = [rng.choice([parent, live]) for _ in range(4)]
            outcomes = racers.race(*work)
            successors = {v for k, v in outcomes if k == "ok"}
            seen.update(successors)
            newest = successors - set(chain)
            assert len(newest) <= 1, "one generation forked into several tokens"
            if newest:
                chain.append(newest.pop())
    time.sleep(2.5)  # past the grace window: only the live token may still rotate
    order = list(seen)
    rng.shuffle(order)
    results = asyncio.run(_try(url, schema, order))
    assert sum(results) <= 1


def test_fs16_purge_during_rotation_deletes_only_what_ended(
    shared_db: tuple[str, str | None],
) -> None:
    url, schema = shared_db

    async def scenario() -> None:
        engine = await engine_with(url, schema=schema, purge_retention=0)
        try:
            client = await engine.admin.get_client("native")
            ended = []
            for _ in range(30):
                issued = await engine.login.login("alice", PASSWORD, client)
                await engine.sessions.logout(issued.refresh_token or "", client)
                ended.append(issued.session_id)
            live = [await engine.login.login("alice", PASSWORD, client) for _ in range(4)]
            stop = time.monotonic() + 3

            async def rotate(tokens: str) -> int:
                count = 0
                while time.monotonic() < stop:
                    tokens = (await engine.refresher.refresh(tokens, client)).refresh_token or ""
                    count += 1
                return count

            async def purge() -> int:
                total = 0
                await asyncio.sleep(0.05)
                while time.monotonic() < stop:
                    total += await engine.admin.purge(batch_size=5)
                    await asyncio.sleep(0.05)
                return total

            *counts, purged = await asyncio.gather(
                *(rotate(t.refresh_token or "") for t in live), purge()
            )
            assert all(c > 0 for c in counts)
            assert purged == len(ended)
            for tokens in live:
                kept = await engine.store.get_session(tokens.session_id)  # type: ignore[arg-type]
                assert kept is not None
                assert not kept.revoked
            for sid in ended:
                assert await engine.store.get_session(sid) is None  # type: ignore[arg-type]
        finally:
            await engine.close()

    asyncio.run(scenario())
