"""Rotation policies under races across processes, on SQLite and PostgreSQL: replays
inside the window, the replay budget spent by concurrent presenters, and mixes of live
and stale presentations. No generation rotates twice, no replay is counted twice, and
no session ends that the rules do not end."""

from __future__ import annotations

import asyncio

import pytest
from engine_racer import Racers, RaceSpec

from keyturn.core.audit import EventType
from keyturn.core.models import ClientType, Delivery, GrantType, RevocationReason, Session
from keyturn.core.policy import NO_LIMIT, ClientKind, ReplayBudget, RotationSettings
from support.engine import PASSWORD, engine_with

pytestmark = pytest.mark.slow

PROCESSES = 4
TASKS = 3


async def _register(url: str, schema: str | None, name: str, rotation: RotationSettings) -> None:
    engine = await engine_with(url, schema=schema)
    try:
        await engine.admin.add_client(
            name,
            ClientType.PUBLIC,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=frozenset({"read"}),
            delivery=Delivery.BODY,
            rotation=rotation,
        )
    finally:
        await engine.close()


async def _login_and_rotate(url: str, schema: str | None, client_id: str) -> tuple[str, str]:
    """A new session rotated once: (its parent token, its live token)."""
    engine = await engine_with(url, schema=schema)
    try:
        client = await engine.admin.get_client(client_id)
        parent = (await engine.login.login("alice", PASSWORD, client)).refresh_token or ""
        live = (await engine.refresher.refresh(parent, client)).refresh_token or ""
        return parent, live
    finally:
        await engine.close()


async def _rotate(url: str, schema: str | None, client_id: str, token: str) -> str:
    engine = await engine_with(url, schema=schema)
    try:
        client = await engine.admin.get_client(client_id)
        return (await engine.refresher.refresh(token, client)).refresh_token or ""
    finally:
        await engine.close()


async def _state(url: str, schema: str | None, token: str) -> tuple[Session, int]:
    """The session of `token` and how many replays its audit trail holds."""
    engine = await engine_with(url, schema=schema)
    try:
        claims = await engine.tokens.decode_refresh(token)
        session = await engine.store.get_session(claims.session_id)
        assert session is not None
        events = await engine.store.list_events(type=EventType.REFRESH_REPLAYED.value)
        return session, sum(1 for e in events if e.event.session_id == session.id)
    finally:
        await engine.close()


def test_concurrent_replays_inside_the_window_converge_and_count_once(
    shared_db: tuple[str, str | None],
) -> None:
    url, schema = shared_db
    asyncio.run(_register(url, schema, "phone", RotationSettings(kind=ClientKind.NATIVE)))
    spec = RaceSpec(url, schema, grace_seconds=10, tasks_per_process=TASKS, client_id="phone")
    with Racers(spec, PROCESSES) as racers:
        for _ in range(4):
            parent, live = asyncio.run(_login_and_rotate(url, schema, "phone"))
            outcomes = racers.race(parent)
            # I4: every presentation of the parent gets the one live token.
            assert outcomes == [("ok", live)] * (PROCESSES * TASKS)
            session, replays = asyncio.run(_state(url, schema, live))
            assert not session.revoked
            assert session.generation == 1  # a replay never advances the generation
            assert session.replays.count(1, 16) == 1  # twelve presentations, one generation
            assert replays == PROCESSES * TASKS  # and every one of them on the record


def test_the_budget_is_spent_per_generation_however_many_present_it(
    shared_db: tuple[str, str | None],
) -> None:
    """A budget of 2: two generations replayed by a crowd each are within it; the third
    ends the session, once, and not a round earlier."""
    url, schema = shared_db
    budget = RotationSettings(retry_window=NO_LIMIT, replay_budget=ReplayBudget(2, 16))
    asyncio.run(_register(url, schema, "tight", budget))
    spec = RaceSpec(url, schema, grace_seconds=10, tasks_per_process=TASKS, client_id="tight")
    with Racers(spec, PROCESSES) as racers:
        parent, live = asyncio.run(_login_and_rotate(url, schema, "tight"))
        for round_ in range(1, 4):
            outcomes = racers.race(parent)
            session, _ = asyncio.run(_state(url, schema, live))
            if round_ <= 2:
                assert outcomes == [("ok", live)] * (PROCESSES * TASKS), round_
                assert not session.revoked, round_
                assert session.replays.count(session.generation, 16) == round_
                parent, live = live, asyncio.run(_rotate(url, schema, "tight", live))
            else:
                assert outcomes == [("error", "invalid_grant")] * (PROCESSES * TASKS)
                assert session.revoked_reason is RevocationReason.REPLAY_BUDGET_EXCEEDED


def test_live_and_stale_presenters_at_once_rotate_each_generation_once(
    shared_db: tuple[str, str | None],
) -> None:
    """Uncoordinated presenters (tabs without the kit, processes of one agent) hold the
    live token and its parent at once. The session moves one generation at most and
    hands out one successor; a parent presented after that rotation is two behind, and
    ending the session for it is the rule, not a race: without a DPoP key a copy two
    generations old is a thief's as far as anyone can tell."""
    url, schema = shared_db
    asyncio.run(_register(url, schema, "agent", RotationSettings(kind=ClientKind.AGENT)))
    spec = RaceSpec(url, schema, grace_seconds=10, tasks_per_process=TASKS, client_id="agent")
    ended = 0
    with Racers(spec, PROCESSES) as racers:
        for _ in range(6):
            parent, live = asyncio.run(_login_and_rotate(url, schema, "agent"))
            outcomes = racers.race(parent, live, parent, live)
            successors = {value for kind, value in outcomes if kind == "ok"} - {live}
            assert len(successors) <= 1, "one generation forked into several tokens"
            session, replays = asyncio.run(_state(url, schema, live))
            assert session.generation == 1 + len(successors)
            assert session.replays.count(session.generation, 16) <= 2
            # Every answer but the one rotation is a replay, and each is on the record.
            answered = sum(1 for kind, _ in outcomes if kind == "ok")
            assert replays == answered - len(successors)
            if session.revoked:
                ended += 1
                assert session.revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
                assert asyncio.run(_state(url, schema, live))[0].revoked
            else:
                assert all(kind == "ok" for kind, _ in outcomes), outcomes
    print(f"sessions ended by a parent presented after the rotation: {ended} of 6")
