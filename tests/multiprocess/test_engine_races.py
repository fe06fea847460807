"""Rotation races across several OS processes on one database (FS-01, FS-02, FS-03).

Each trial: 4 processes × 4 tasks present one token at the same moment.
"""

from __future__ import annotations

import asyncio

import pytest
from engine_racer import Racers, RaceSpec

from keyturn.core.models import RevocationReason, Session
from support.engine import PASSWORD, engine_with

PROCESSES = 4
TASKS = 4
TRIALS = 25

pytestmark = pytest.mark.slow


async def _login(url: str, schema: str | None) -> str:
    engine = await engine_with(url, schema=schema)
    try:
        client = await engine.admin.get_client("native")
        issued = await engine.login.login("alice", PASSWORD, client)
        return issued.refresh_token or ""
    finally:
        await engine.close()


async def _sessions(url: str, schema: str | None) -> list[Session]:
    engine = await engine_with(url, schema=schema)
    try:
        return await engine.store.list_sessions(include_revoked=True)
    finally:
        await engine.close()


def test_fs01_parallel_presentations_in_grace_all_get_one_successor(
    shared_db: tuple[str, str | None],
) -> None:
    url, schema = shared_db
    token = asyncio.run(_login(url, schema))
    spec = RaceSpec(url, schema, grace_seconds=10, tasks_per_process=TASKS)
    with Racers(spec, PROCESSES) as racers:
        for trial in range(TRIALS):
            outcomes = racers.race(token)
            assert len(outcomes) == PROCESSES * TASKS
            assert {kind for kind, _ in outcomes} == {"ok"}, (trial, outcomes)
            successors = {value for _, value in outcomes}
            assert len(successors) == 1, f"trial {trial}: forked into {len(successors)}"
            (successor,) = successors
            assert successor != token
            token = successor
    (session,) = asyncio.run(_sessions(url, schema))
    # I1/I4: exactly one step per trial, however many presenters.
    assert session.generation == TRIALS
    assert not session.revoked


def test_fs02_with_grace_zero_exactly_one_presenter_wins_and_the_session_ends(
    shared_db: tuple[str, str | None],
) -> None:
    url, schema = shared_db
    spec = RaceSpec(url, schema, grace_seconds=0, tasks_per_process=TASKS)
    with Racers(spec, PROCESSES) as racers:
        for trial in range(TRIALS):
            token = asyncio.run(_login(url, schema))
            outcomes = racers.race(token)
            winners = [value for kind, value in outcomes if kind == "ok"]
            losers = [value for kind, value in outcomes if kind == "error"]
            assert len(winners) == 1, (trial, outcomes)
            assert set(losers) == {"invalid_grant"}, (trial, outcomes)
    sessions = asyncio.run(_sessions(url, schema))
    assert len(sessions) == TRIALS
    for session in sessions:
        # Never two live successors: one rotation, then strict-mode reuse ended it.
        assert session.generation == 1
        assert session.revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
