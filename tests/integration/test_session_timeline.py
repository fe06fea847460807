"""A session's timeline on every store: its events read by session (keyset pages,
hostile ids a miss), and the use case that tells its story — login, rotations,
replays, the end and its reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from keyturn.core.audit import EventType
from keyturn.core.errors import InvalidGrant, InvalidRequest, NotFound
from keyturn.core.ids import SessionId
from keyturn.core.models import ClientType, Delivery, GrantType, RevocationReason
from keyturn.core.models import Device as DeviceInfo
from keyturn.core.policy import ClientKind, ReplayBudget, RotationSettings
from keyturn.core.ports import Store
from keyturn.service.context import RequestContext
from keyturn.service.engine import Engine
from keyturn.service.guarded_store import GuardedStore
from keyturn.service.timeline import EndSource, EventEntry, Rotations, Timeline
from keyturn.storage import open_store
from support.engine import PASSWORD, FakeClock, engine_with
from support.store_values import a_client, a_session, a_user, an_event

HOSTILE_IDS = ["", "\x00", "a\x00b", "\ud800", "x\udfffy", "' OR 1=1 --", "%", "é" * 300]


@pytest.fixture
async def store(store_url: tuple[str, str | None]) -> AsyncIterator[Store]:
    url, schema = store_url
    opened = await open_store(url, timeout=5, schema=schema)
    yield GuardedStore(opened)  # as the engine uses it
    await opened.close()


# The store read


async def test_session_events_are_that_sessions_only_oldest_first(store: Store) -> None:
    alice, native = a_user(), a_client()
    await store.add_user(alice, an_event(EventType.USER_CREATED))
    await store.add_client(native, an_event(EventType.CLIENT_CREATED))
    mine, other = a_session(alice, native), a_session(alice, native)
    await store.create_session(mine, an_event(EventType.LOGIN_SUCCEEDED, session_id=mine.id))
    await store.create_session(other, an_event(EventType.LOGIN_SUCCEEDED, session_id=other.id))
    for generation in range(5):
        await store.record(
            an_event(EventType.REFRESH_REPLAYED, session_id=mine.id, generation=generation)
        )
        await store.record(an_event(EventType.REFRESH_REPLAYED, session_id=other.id))
    found = await store.list_session_events(mine.id, after_id=None, limit=100)
    assert [e.event.session_id for e in found] == [mine.id] * 6
    assert [e.event.generation for e in found[1:]] == [0, 1, 2, 3, 4]
    assert [e.id for e in found] == sorted(e.id for e in found)


async def test_session_events_page_by_id(store: Store) -> None:
    alice, native = a_user(), a_client()
    await store.add_user(alice, an_event(EventType.USER_CREATED))
    await store.add_client(native, an_event(EventType.CLIENT_CREATED))
    session = a_session(alice, native)
    await store.create_session(session, an_event(EventType.LOGIN_SUCCEEDED, session_id=session.id))
    for generation in range(6):
        await store.record(
            an_event(EventType.REFRESH_REPLAYED, session_id=session.id, generation=generation)
        )
    pages, after = [], None
    while True:
        page = await store.list_session_events(session.id, after_id=after, limit=3)
        if not page:
            break
        pages.append([e.event.generation for e in page])
        after = page[-1].id
    assert pages == [[None, 0, 1], [2, 3, 4], [5]]
    everything = await store.list_session_events(session.id, after_id=None, limit=100)
    last = everything[-1].id
    assert await store.list_session_events(session.id, after_id=last, limit=10) == []


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
async def test_a_hostile_session_id_is_a_miss_never_an_error(store: Store, hostile: str) -> None:
    alice, native = a_user(), a_client()
    await store.add_user(alice, an_event(EventType.USER_CREATED))
    await store.add_client(native, an_event(EventType.CLIENT_CREATED))
    session = a_session(alice, native)
    await store.create_session(session, an_event(EventType.LOGIN_SUCCEEDED, session_id=session.id))
    assert await store.list_session_events(SessionId(hostile), after_id=None, limit=10) == []
    assert await store.list_session_events(SessionId(hostile), after_id=5, limit=10) == []


# The use case, on a real engine


@pytest.fixture
async def world(store_url: tuple[str, str | None]) -> AsyncIterator[World]:
    url, schema = store_url
    clock = FakeClock()
    engine = await engine_with(url, clock=clock, schema=schema)
    await engine.admin.add_user("alice", PASSWORD)
    await engine.admin.add_user("bob", PASSWORD)
    # Native: the predecessor answers until its successor is used, whenever it comes
    # back; a budget of one replayed generation in 16 makes the second one theft.
    await engine.admin.add_client(
        "phone",
        ClientType.PUBLIC,
        grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
        scope=frozenset({"read"}),
        delivery=Delivery.BODY,
        rotation=RotationSettings(kind=ClientKind.NATIVE, replay_budget=ReplayBudget(1, 16)),
    )
    yield World(engine, clock)
    await engine.close()


@dataclass
class World:
    engine: Engine
    clock: FakeClock

    async def login(self, username: str = "alice") -> Device:
        """A login of `username` on a phone; returns its session's tokens."""
        client = await self.engine.admin.get_client("phone")
        issued = await self.engine.login.login(
            username, PASSWORD, client, context=RequestContext(device=PHONE)
        )
        return Device(SessionId(issued.session_id or ""), [issued.refresh_token or ""])

    async def rotate(self, device: Device, times: int) -> None:
        client = await self.engine.admin.get_client("phone")
        for _ in range(times):
            self.clock.advance(60)
            issued = await self.engine.refresher.refresh(device.tokens[-1], client)
            device.tokens.append(issued.refresh_token or "")

    async def present(self, token: str, after: float = 600) -> bool:
        """Present `token` from the thief's address `after` seconds on; True if answered."""
        self.clock.advance(after)
        client = await self.engine.admin.get_client("phone")
        try:
            await self.engine.refresher.refresh(token, client, None, RequestContext(device=THIEF))
        except InvalidGrant:
            return False
        return True


@dataclass
class Device:
    sid: SessionId
    tokens: list[str]


PHONE = DeviceInfo(user_agent="Phone/1.0", ip="198.51.100.7")
THIEF = DeviceInfo(user_agent="curl/8.0", ip="203.0.113.66")


def shape(timeline: Timeline) -> list[tuple[object, ...]]:
    """The entries as (kind, reason, generation) and rotations as ("rotations", from, to)."""
    return [
        ("rotations", e.from_generation, e.to_generation)
        if isinstance(e, Rotations)
        else (e.kind.value, e.reason, e.generation)
        for e in timeline.entries
    ]


async def test_timeline_tells_login_rotations_replay_and_the_budget_end(world: World) -> None:
    phone = await world.login()
    await world.rotate(phone, 3)
    assert await world.present(phone.tokens[2])  # a lost response, answered
    await world.rotate(phone, 4)
    last_rotation = world.clock.now()
    assert not await world.present(phone.tokens[6])  # the second replayed generation
    timeline = await world.engine.timelines.explain(phone.sid)
    assert shape(timeline) == [
        ("login_succeeded", None, 0),
        ("rotations", 0, 3),
        ("refresh_replayed", "replayed_lost_response", 2),
        ("rotations", 3, 7),
        ("reuse_detected", "replay_budget_exceeded", 6),
    ]
    login, first, replay, second, end = timeline.entries
    assert isinstance(login, EventEntry)
    assert isinstance(replay, EventEntry)
    assert isinstance(first, Rotations)
    assert isinstance(second, Rotations)
    assert isinstance(end, EventEntry)
    assert login.device.ip == PHONE.ip
    assert login.device.user_agent == PHONE.user_agent
    assert replay.device.ip == THIEF.ip
    assert replay.live_generation == 3
    # Rotations have no time of their own: bounds from the events, and the last one's
    # time from the session row, only where it is the session's last.
    assert (first.after, first.before, first.last_at) == (login.at, replay.at, None)
    assert (second.after, second.before, second.last_at) == (replay.at, end.at, last_rotation)
    assert second.count == 4
    assert end.ends_session
    assert not replay.ends_session
    assert timeline.end.source is EndSource.SESSION_EVENT
    assert timeline.end.reason is RevocationReason.REPLAY_BUDGET_EXCEEDED
    assert timeline.end.generation == 7
    assert timeline.end.event == end
    assert timeline.end.explanation
    assert "budget" in timeline.end.explanation
    assert timeline.complete


async def test_rotations_after_the_last_event_end_at_the_rows_last_rotation(
    world: World,
) -> None:
    phone = await world.login()
    await world.rotate(phone, 5)
    timeline = await world.engine.timelines.explain(phone.sid)
    assert shape(timeline) == [("login_succeeded", None, 0), ("rotations", 0, 5)]
    rotations = timeline.entries[-1]
    assert isinstance(rotations, Rotations)
    assert rotations.last_at == world.clock.now()
    assert rotations.before is None
    assert timeline.end.live
    assert timeline.end.generation == 5
    assert timeline.end.at is None
    assert timeline.end.reason is None


async def test_a_logout_is_the_last_entry_and_the_end(world: World) -> None:
    phone = await world.login()
    await world.rotate(phone, 2)
    world.clock.advance(30)
    client = await world.engine.admin.get_client("phone")
    await world.engine.sessions.logout(phone.tokens[-1], client, RequestContext(device=PHONE))
    timeline = await world.engine.timelines.explain(phone.sid)
    assert shape(timeline) == [
        ("login_succeeded", None, 0),
        ("rotations", 0, 2),
        ("session_revoked", "logout", 2),
    ]
    assert timeline.end.source is EndSource.SESSION_EVENT
    assert timeline.end.reason is RevocationReason.LOGOUT


async def test_an_end_shared_by_every_session_of_the_user_is_found(world: World) -> None:
    phone, laptop = await world.login(), await world.login()
    world.clock.advance(5)
    alice = await world.engine.admin.user_named("alice")
    await world.engine.sessions.end_all(alice.id, context=RequestContext(device=PHONE))
    for device in (phone, laptop):
        timeline = await world.engine.timelines.explain(device.sid)
        assert shape(timeline) == [("login_succeeded", None, 0)]
        assert timeline.end.source is EndSource.SHARED_EVENT
        assert timeline.end.reason is RevocationReason.LOGOUT_ALL
        assert timeline.end.event is not None
        assert timeline.end.event.device.user_agent == PHONE.user_agent


async def test_a_passed_idle_deadline_is_the_end_before_the_row_says_so(world: World) -> None:
    phone = await world.login()
    session = await world.engine.store.get_session(phone.sid)
    assert session is not None
    world.clock.current = session.idle_expires_at
    timeline = await world.engine.timelines.explain(phone.sid)
    assert timeline.end.source is EndSource.DEADLINE
    assert timeline.end.reason is RevocationReason.IDLE_EXPIRED
    assert timeline.end.at == session.idle_expires_at


@pytest.mark.parametrize("hostile", [*HOSTILE_IDS, "00000000-0000-4000-8000-000000000000"])
async def test_explaining_an_unknown_or_hostile_session_is_not_found(
    world: World, hostile: str
) -> None:
    await world.login()
    with pytest.raises(NotFound):
        await world.engine.timelines.explain(SessionId(hostile))


# The user's own events


async def test_the_user_pages_through_their_own_sessions_events(world: World) -> None:
    phone = await world.login()
    await world.rotate(phone, 3)
    assert await world.present(phone.tokens[2])
    await world.rotate(phone, 4)
    assert not await world.present(phone.tokens[6])
    alice = await world.engine.admin.user_named("alice")
    pages, after = [], None
    while True:
        page = await world.engine.timelines.events_for(alice.id, phone.sid, after_id=after, limit=2)
        pages.append([(e.kind.value, e.reason) for e in page.events])
        assert page.end.reason is RevocationReason.REPLAY_BUDGET_EXCEEDED
        if page.next_after is None:
            break
        after = page.next_after
    assert pages == [
        [("login_succeeded", None), ("refresh_replayed", "replayed_lost_response")],
        [("reuse_detected", "replay_budget_exceeded")],
    ]


async def test_another_users_unknown_and_hostile_sessions_are_the_same_not_found(
    world: World,
) -> None:
    phone = await world.login("alice")
    bob = await world.engine.admin.user_named("bob")
    answers = set()
    for sid in [phone.sid, "00000000-0000-4000-8000-000000000000", *HOSTILE_IDS]:
        with pytest.raises(NotFound) as refused:
            await world.engine.timelines.events_for(bob.id, sid, after_id=None, limit=10)
        answers.add((refused.value.code, refused.value.public))
    assert answers == {("not_found", "No such session.")}


@pytest.mark.parametrize(("after", "limit"), [(None, 0), (None, 201), (-1, 10), (2**63, 10)])
async def test_a_page_out_of_range_is_an_invalid_request(
    world: World, after: int | None, limit: int
) -> None:
    phone = await world.login()
    alice = await world.engine.admin.user_named("alice")
    with pytest.raises(InvalidRequest):
        await world.engine.timelines.events_for(alice.id, phone.sid, after_id=after, limit=limit)


async def test_a_password_change_ends_the_others_and_is_only_an_entry_of_its_own(
    world: World,
) -> None:
    phone, laptop = await world.login(), await world.login()
    world.clock.advance(5)
    alice = await world.engine.admin.user_named("alice")
    await world.engine.sessions.change_password(
        alice.id, PASSWORD, "a brand new long passphrase", keep=phone.sid
    )
    kept = await world.engine.timelines.explain(phone.sid)
    assert shape(kept) == [
        ("login_succeeded", None, 0),
        ("password_changed", "password_changed", None),
    ]
    assert kept.end.live
    ended = await world.engine.timelines.explain(laptop.sid)
    assert ended.end.source is EndSource.SHARED_EVENT
    assert ended.end.reason is RevocationReason.PASSWORD_CHANGED


async def test_a_disabled_client_is_the_shared_end_of_its_sessions(world: World) -> None:
    phone = await world.login()
    world.clock.advance(5)
    await world.engine.admin.disable_client("phone")
    timeline = await world.engine.timelines.explain(phone.sid)
    assert timeline.end.source is EndSource.SHARED_EVENT
    assert timeline.end.reason is RevocationReason.CLIENT_DISABLED
    assert timeline.end.event is not None
    assert timeline.end.event.kind is EventType.CLIENT_DISABLED
