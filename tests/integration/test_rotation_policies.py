"""Per-client rotation policies and the one session-ending path, on every store: retry
windows, replay budgets, rotation off, presets stored and read back, every replay on
the record, and reuse at login honouring `KEYTURN_REUSE_REVOKES=user`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import InvalidGrant, NotFound
from keyturn.core.ids import ClientId, SessionId
from keyturn.core.models import (
    Client,
    ClientType,
    Delivery,
    Device,
    GrantType,
    RevocationReason,
    Session,
)
from keyturn.core.policy import (
    DEFAULT_BUDGET,
    NO_LIMIT,
    ClientKind,
    ReplayBudget,
    ReplayLog,
    RotationSettings,
)
from keyturn.core.rotation import RefreshOutcome
from keyturn.service.context import RequestContext
from keyturn.service.engine import Engine
from keyturn.service.results import IssuedTokens
from support.engine import PASSWORD, FakeClock, engine_with


class Outcomes:
    """A refresh observer: what each presentation came to."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, RefreshOutcome]] = []

    def refreshed(self, client_id: ClientId, outcome: RefreshOutcome) -> None:
        self.seen.append((client_id, outcome))

    async def rotated(self, session_id: SessionId) -> None:
        return None

    async def revoked(self, ended: object, reason: object, at: object) -> None:
        return None

    async def recorded(self, event: object) -> None:
        return None


@dataclass
class World:
    engine: Engine
    clock: FakeClock
    outcomes: Outcomes

    async def client(self, name: str, rotation: RotationSettings) -> Client:
        added = await self.engine.admin.add_client(
            name,
            ClientType.PUBLIC,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=frozenset({"read"}),
            delivery=Delivery.BODY,
            rotation=rotation,
        )
        return added.client

    async def login(self, client: Client, previous: str | None = None) -> IssuedTokens:
        return await self.engine.login.login(
            "alice", PASSWORD, client, previous_refresh_token=previous
        )

    async def refresh(self, tokens: IssuedTokens, client: Client) -> IssuedTokens:
        return await self.engine.refresher.refresh(tokens.refresh_token or "", client)

    async def session(self, tokens: IssuedTokens) -> Session:
        found = await self.engine.store.get_session(tokens.session_id)  # type: ignore[arg-type]
        assert found is not None
        return found


async def _world(url: str, schema: str | None, **settings: object) -> World:
    clock = FakeClock()
    outcomes = Outcomes()
    engine = await engine_with(url, clock=clock, schema=schema, observers=[outcomes], **settings)
    await engine.admin.add_user("alice", PASSWORD)
    await engine.admin.add_user("bob", PASSWORD)
    return World(engine, clock, outcomes)


@pytest.fixture
async def world(store_url: tuple[str, str | None]) -> AsyncIterator[World]:
    made = await _world(*store_url)
    yield made
    await made.engine.close()


@pytest.fixture
async def user_scope_world(store_url: tuple[str, str | None]) -> AsyncIterator[World]:
    made = await _world(*store_url, reuse_revokes="user")
    yield made
    await made.engine.close()


NATIVE = RotationSettings(kind=ClientKind.NATIVE)


async def test_a_client_policy_is_stored_and_read_back(world: World) -> None:
    settings = RotationSettings(
        kind=ClientKind.AGENT,
        retry_window=NO_LIMIT,
        replay_budget=ReplayBudget(3, 12),
        rotate=True,
        same_key_generations=5,
    )
    await world.client("agent", settings)
    assert (await world.engine.admin.get_client("agent")).rotation == settings
    await world.client("plain", RotationSettings())
    assert (await world.engine.admin.get_client("plain")).rotation == RotationSettings()


async def test_update_changes_only_what_it_names_and_is_audited(world: World) -> None:
    await world.client("app", RotationSettings(kind=ClientKind.BROWSER, retry_window=30))
    updated = await world.engine.admin.update_rotation(
        "app", RotationSettings(replay_budget=NO_LIMIT)
    )
    expected = RotationSettings(kind=ClientKind.BROWSER, retry_window=30, replay_budget=NO_LIMIT)
    assert updated.rotation == expected
    assert (await world.engine.admin.get_client("app")).rotation == expected
    events = await world.engine.store.list_events(type=EventType.CLIENT_UPDATED.value)
    assert [e.event.detail for e in events] == ["kind=browser retry_window=30 replay_budget=off"]
    with pytest.raises(NotFound):
        await world.engine.admin.update_rotation("nobody", RotationSettings(rotate=False))


async def test_native_preset_retries_a_lost_response_hours_later(world: World) -> None:
    app = await world.client("app", NATIVE)
    rt0 = await world.login(app)
    await world.refresh(rt0, app)  # the response is lost: the device still holds rt0
    world.clock.advance(50 * 60)  # far past any time window; the session idles at 1 h
    again = await world.refresh(rt0, app)
    assert not (await world.session(again)).revoked
    assert world.outcomes.seen[-1] == ("app", RefreshOutcome.REPLAYED_LOST_RESPONSE)
    replays = await world.engine.store.list_events(type=EventType.REFRESH_REPLAYED.value)
    assert [(e.event.generation, e.event.reason) for e in replays] == [
        (0, "replayed_lost_response")
    ]
    assert (await world.session(again)).replays == ReplayLog(0, 1)


async def test_browser_preset_ends_the_session_after_its_window(world: World) -> None:
    app = await world.client("spa", RotationSettings(kind=ClientKind.BROWSER))
    rt0 = await world.login(app)
    rt1 = await world.refresh(rt0, app)
    world.clock.advance(11)
    with pytest.raises(InvalidGrant):
        await world.refresh(rt0, app)
    assert (await world.session(rt1)).revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
    assert world.outcomes.seen[-1] == ("spa", RefreshOutcome.REUSE_OUTSIDE_WINDOW)


async def test_a_lockstep_thief_is_caught_by_the_budget(world: World) -> None:
    """The victim and a thief with a copy of its token present every generation; one of
    them replays on every rotation. The session ends on the replay past the budget."""
    app = await world.client("app", RotationSettings(kind=ClientKind.NATIVE))
    budget = DEFAULT_BUDGET
    victim = await world.login(app)
    answered = 0
    for _ in range(budget.replays + 2):
        world.clock.advance(900)
        successor = await world.refresh(victim, app)  # the victim rotates
        world.clock.advance(2)
        try:
            await world.refresh(victim, app)  # the thief replays the predecessor
        except InvalidGrant:
            break
        answered += 1
        victim = successor
    assert answered == budget.replays
    ended = await world.session(victim)
    assert ended.revoked_reason is RevocationReason.REPLAY_BUDGET_EXCEEDED
    alarms = await world.engine.store.list_events(type=EventType.REUSE_DETECTED.value)
    assert [e.event.reason for e in alarms] == ["replay_budget_exceeded"]
    recorded = await world.engine.store.list_events(type=EventType.REFRESH_REPLAYED.value)
    assert len(recorded) == budget.replays


async def test_many_presentations_of_one_generation_spend_one_replay(world: World) -> None:
    app = await world.client("app", RotationSettings(replay_budget=ReplayBudget(1, 16)))
    rt0 = await world.login(app)
    await world.refresh(rt0, app)
    for _ in range(6):  # six tabs, one stale copy
        await world.refresh(rt0, app)
    session = await world.session(rt0)
    assert not session.revoked
    assert session.replays == ReplayLog(0, 1)
    assert len(await world.engine.store.list_events(type=EventType.REFRESH_REPLAYED.value)) == 6


async def test_rotation_off_keeps_the_token_and_pushes_the_idle_deadline(world: World) -> None:
    app = await world.client("svc", RotationSettings(kind=ClientKind.SERVICE))
    rt0 = await world.login(app)
    before = await world.session(rt0)
    world.clock.advance(600)
    again = await world.refresh(rt0, app)
    assert again.refresh_token == rt0.refresh_token
    after = await world.session(rt0)
    assert after.generation == 0
    assert after.idle_expires_at > before.idle_expires_at
    assert world.outcomes.seen[-1] == ("svc", RefreshOutcome.KEPT)
    await world.engine.sessions.end(after, RevocationReason.LOGOUT)
    with pytest.raises(InvalidGrant):
        await world.refresh(rt0, app)  # a kept token still dies with its session


async def test_login_reuse_honours_reuse_revokes_user(user_scope_world: World) -> None:
    """The stale cookie at login is reuse like any other: with
    KEYTURN_REUSE_REVOKES=user it ends every session of the user, not only its own."""
    world = user_scope_world
    app = await world.client("spa", RotationSettings(kind=ClientKind.BROWSER))
    other_device = await world.login(app)
    rt0 = await world.login(app)
    await world.refresh(rt0, app)
    world.clock.advance(60)  # past the browser window: rt0 is stale
    await world.login(app, previous=rt0.refresh_token)
    assert (await world.session(rt0)).revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
    assert (
        await world.session(other_device)
    ).revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
    alarms = await world.engine.store.list_events(type=EventType.REUSE_DETECTED.value)
    assert [e.event.reason for e in alarms] == ["reuse_outside_window"]


async def test_login_supersedes_a_live_previous_session_without_alarm(
    user_scope_world: World,
) -> None:
    world = user_scope_world
    app = await world.client("spa", RotationSettings(kind=ClientKind.BROWSER))
    other_device = await world.login(app)
    rt0 = await world.login(app)
    await world.login(app, previous=rt0.refresh_token)
    assert (await world.session(rt0)).revoked_reason is RevocationReason.SUPERSEDED_AT_LOGIN
    assert not (await world.session(other_device)).revoked
    assert await world.engine.store.list_events(type=EventType.REUSE_DETECTED.value) == []


async def test_a_replay_racing_a_revocation_records_nothing(world: World) -> None:
    app = await world.client("app", NATIVE)
    rt0 = await world.login(app)
    await world.refresh(rt0, app)
    session = await world.session(rt0)
    await world.engine.sessions.end(session, RevocationReason.LOGOUT)
    store = world.engine.store
    moved = session.replays.with_replay(0)
    assert not await store.record_replay(session.id, session.replays, moved, _replay_event(session))
    assert not await store.keep_session(session.id, 1, world.clock.now(), world.clock.now())


async def test_a_replay_on_a_stale_log_records_nothing(world: World) -> None:
    app = await world.client("app", NATIVE)
    rt0 = await world.login(app)
    await world.refresh(rt0, app)
    await world.refresh(rt0, app)  # writes the log
    session = await world.session(rt0)
    store = world.engine.store
    before = len(await store.list_events(type=EventType.REFRESH_REPLAYED.value))
    stale = ReplayLog()
    assert not await store.record_replay(
        session.id, stale, stale.with_replay(0), _replay_event(session)
    )
    assert len(await store.list_events(type=EventType.REFRESH_REPLAYED.value)) == before
    assert (await world.session(rt0)).replays == session.replays


def _replay_event(session: Session) -> SecurityEvent:
    return SecurityEvent(
        type=EventType.REFRESH_REPLAYED,
        at=session.created_at,
        session_id=session.id,
        reason=RefreshOutcome.REPLAYED_LOST_RESPONSE.value,
    )


async def test_the_rotating_address_is_kept_by_both_ways_of_rotating(world: World) -> None:
    app = await world.client("app", NATIVE)
    rt0 = await world.login(app)
    here = RequestContext(device=Device(ip="192.0.2.7"))
    there = RequestContext(device=Device(ip="198.51.100.9"))
    refresher = world.engine.refresher
    rt1 = await refresher.refresh(rt0.refresh_token or "", app, context=here)  # one statement
    assert (await world.session(rt1)).rotated_ip == "192.0.2.7"
    narrowed = frozenset({"read"})
    rt2 = await refresher.refresh(rt1.refresh_token or "", app, narrowed, context=there)
    assert (await world.session(rt2)).rotated_ip == "198.51.100.9"  # read, then swap
    # The other device's parent, at once, from its own address: concurrent, free.
    await refresher.refresh(rt1.refresh_token or "", app, context=there)
    assert (await world.session(rt2)).replays == ReplayLog()
    # The same parent from elsewhere spends a replay.
    await refresher.refresh(rt1.refresh_token or "", app, context=here)
    assert (await world.session(rt2)).replays == ReplayLog(1, 1)
