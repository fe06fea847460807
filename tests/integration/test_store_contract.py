"""The store contract: one suite, every backend (memory, SQLite, PostgreSQL), real
connections. What the rules rely on the store for is pinned here."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import AlreadyExists, NotFound
from keyturn.core.ids import ClientId, KeyId, SessionId, UserId
from keyturn.core.models import (
    AuthorizationCode,
    Client,
    ClientType,
    Delivery,
    Device,
    EndedSession,
    GrantType,
    KeyState,
    KeyUse,
    LifetimeOverrides,
    Presentation,
    RevocationReason,
    Session,
    StoredKey,
    User,
)
from keyturn.core.ports import Store
from keyturn.service.guarded_store import GuardedStore
from keyturn.storage import open_store

T0 = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def event(kind: EventType = EventType.SESSION_REVOKED, **kw: object) -> SecurityEvent:
    return SecurityEvent(type=kind, at=kw.pop("at", T0), **kw)  # type: ignore[arg-type]


def user(name: str = "alice") -> User:
    return User(
        id=UserId(str(uuid.uuid4())),
        username=name,
        password_hash="$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        enabled=True,
        created_at=T0,
        password_changed_at=T0,
    )


def client(client_id: str = "native") -> Client:
    return Client(
        id=ClientId(client_id),
        type=ClientType.PUBLIC,
        secret_hash=None,
        redirect_uris=("https://app.test/cb",),
        grant_types=frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN}),
        scope=frozenset({"read", "write"}),
        delivery=Delivery.COOKIE,
        audience=("api",),
        lifetimes=LifetimeOverrides(access_token_ttl=60),
        enabled=True,
        created_at=T0,
        allowed_origins=("https://app.test",),
        can_introspect=False,
    )


def session(u: User, c: Client, *, created: datetime = T0, **kw: object) -> Session:
    values: dict[str, object] = {
        "id": SessionId(str(uuid.uuid4())),
        "user_id": u.id,
        "client_id": c.id,
        "scope": frozenset({"read"}),
        "salt": b"\x00\x01\x02\x03\x04\x05\x06\xff",
        "generation": 0,
        "mac_key_id": 7,
        "created_at": created,
        "last_used_at": created,
        "rotated_at": None,
        "idle_expires_at": created + timedelta(hours=1),
        "absolute_expires_at": created + timedelta(days=1),
        "device": Device(user_agent="Firefox", ip="203.0.113.9", name="laptop"),
    }
    values.update(kw)
    return Session(**values)  # type: ignore[arg-type]


@pytest.fixture
async def store(store_url: tuple[str, str | None]) -> AsyncIterator[Store]:
    url, schema = store_url
    opened = await open_store(url, timeout=5, schema=schema)
    # As the engine uses it: behind the guard that answers for text no store can hold.
    yield GuardedStore(opened)
    await opened.close()


@pytest.fixture
async def seeded(store: Store) -> tuple[Store, User, Client]:
    u, c = user(), client()
    await store.add_user(u, event(EventType.USER_CREATED))
    await store.add_client(c, event(EventType.CLIENT_CREATED))
    return store, u, c


async def test_users_round_trip_and_names_are_unique(store: Store) -> None:
    alice = user()
    await store.add_user(alice, event(EventType.USER_CREATED))
    assert await store.get_user(alice.id) == alice
    assert await store.find_user("alice") == alice
    assert await store.find_user("nobody") is None
    with pytest.raises(AlreadyExists):
        await store.add_user(user("alice"), event(EventType.USER_CREATED))
    await store.add_user(user("bob"), event(EventType.USER_CREATED))
    assert [u.username for u in await store.list_users()] == ["alice", "bob"]


async def test_clients_round_trip_every_field(store: Store) -> None:
    c = client()
    await store.add_client(c, event(EventType.CLIENT_CREATED))
    assert await store.get_client(c.id) == c
    with pytest.raises(AlreadyExists):
        await store.add_client(c, event(EventType.CLIENT_CREATED))
    assert await store.list_clients() == [c]


async def test_sessions_round_trip_every_field(seeded: tuple[Store, User, Client]) -> None:
    store, u, c = seeded
    s = session(u, c, authenticated_at=T0 + timedelta(seconds=1))
    await store.create_session(s, event(EventType.LOGIN_SUCCEEDED))
    assert await store.get_session(s.id) == s


async def test_session_with_user_reads_both_at_once(seeded: tuple[Store, User, Client]) -> None:
    store, u, c = seeded
    s = session(u, c)
    await store.create_session(s, event())
    assert await store.get_session_with_user(s.id) == (s, u)
    assert await store.get_session_with_user(SessionId(str(uuid.uuid4()))) is None
    assert await store.get_session_with_user(SessionId("a\x00b")) is None


async def test_presentation_reads_client_session_and_user_at_once(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    other = client("other")
    await store.add_client(other, event(EventType.CLIENT_CREATED))
    s = session(u, c)
    await store.create_session(s, event())
    unknown = SessionId(str(uuid.uuid4()))
    assert await store.get_presentation(c.id, s.id) == Presentation(c, s, u)
    # The client comes back whether or not the session belongs to it: the rules decide.
    assert await store.get_presentation(other.id, s.id) == Presentation(other, s, u)
    assert await store.get_presentation(c.id, unknown) == Presentation(c)
    assert await store.get_presentation(ClientId("nobody"), s.id) == Presentation(None)
    assert await store.get_presentation(c.id, SessionId("a\x00b")) == Presentation(c)
    assert await store.get_presentation(ClientId("a\x00b"), s.id) == Presentation(None)
    await store.disable_client(c.id, T0, event(EventType.CLIENT_DISABLED))
    read = await store.get_presentation(c.id, s.id)
    assert read.client is not None
    assert not read.client.enabled
    assert read.session is not None
    assert read.session.revoked


async def test_advance_generation_is_compare_and_swap(seeded: tuple[Store, User, Client]) -> None:
    store, u, c = seeded
    s = session(u, c)
    await store.create_session(s, event())
    later = T0 + timedelta(seconds=5)
    idle = later + timedelta(hours=1)
    assert await store.advance_generation(s.id, 0, later, idle)
    assert not await store.advance_generation(s.id, 0, later, idle)
    stored = await store.get_session(s.id)
    assert stored == replace(
        s, generation=1, rotated_at=later, last_used_at=later, idle_expires_at=idle
    )


async def test_advance_generation_of_a_revoked_session_fails(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    s = session(u, c)
    await store.create_session(s, event())
    await store.revoke_session(s.id, RevocationReason.LOGOUT, T0, event())
    assert not await store.advance_generation(s.id, 0, T0, T0 + timedelta(hours=1))
    stored = await store.get_session(s.id)
    assert stored is not None
    assert stored.generation == 0


async def test_sixteen_concurrent_advances_succeed_once(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    s = session(u, c)
    await store.create_session(s, event())
    results = await asyncio.gather(
        *(store.advance_generation(s.id, 0, T0, T0 + timedelta(hours=1)) for _ in range(16))
    )
    assert results.count(True) == 1
    stored = await store.get_session(s.id)
    assert stored is not None
    assert stored.generation == 1


async def test_revoke_session_records_the_event_and_reports_who_revoked(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    s = session(u, c)
    await store.create_session(s, event())
    first = event(EventType.REUSE_DETECTED, session_id=s.id, reason="reuse_detected")
    assert await store.revoke_session(s.id, RevocationReason.REUSE_OUTSIDE_WINDOW, T0, first)
    assert not await store.revoke_session(s.id, RevocationReason.LOGOUT, T0, event(session_id=s.id))
    stored = await store.get_session(s.id)
    assert stored is not None
    assert stored.revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
    assert stored.revoked_at == T0
    recorded = await store.list_events(type=EventType.REUSE_DETECTED.value)
    assert [r.event for r in recorded] == [first]
    assert len(await store.list_events(type=EventType.SESSION_REVOKED.value)) == 2


async def test_revoke_user_sessions_keeps_one(seeded: tuple[Store, User, Client]) -> None:
    store, u, c = seeded
    a, b, kept = session(u, c), session(u, c), session(u, c)
    for s in (a, b, kept):
        await store.create_session(s, event())
    ended = await store.revoke_user_sessions(
        u.id, RevocationReason.LOGOUT_ALL, T0, event(), keep=kept.id
    )
    assert set(ended) == {EndedSession(a.id, c.id), EndedSession(b.id, c.id)}
    assert [s.id for s in await store.list_sessions(u.id)] == [kept.id]
    assert await store.revoke_user_sessions(u.id, RevocationReason.LOGOUT_ALL, T0, event()) == [
        EndedSession(kept.id, c.id)
    ]


async def test_disable_user_ends_every_session_atomically(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    a, b = session(u, c), session(u, c)
    await store.create_session(a, event())
    await store.create_session(b, event())
    ended = await store.disable_user(u.id, T0, event(EventType.USER_DISABLED))
    assert set(ended) == {EndedSession(a.id, c.id), EndedSession(b.id, c.id)}
    stored = await store.get_user(u.id)
    assert stored is not None
    assert not stored.enabled
    for s in (a, b):
        got = await store.get_session(s.id)
        assert got is not None
        assert got.revoked_reason is RevocationReason.USER_DISABLED
    with pytest.raises(NotFound):
        await store.disable_user(UserId(str(uuid.uuid4())), T0, event())


async def test_change_password_ends_others_and_marks_the_kept_session(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    kept, other = session(u, c), session(u, c)
    await store.create_session(kept, event())
    await store.create_session(other, event())
    at = T0 + timedelta(minutes=3)
    ended = await store.change_password(u.id, "new-hash", at, kept.id, event())
    assert ended == [EndedSession(other.id, c.id)]
    stored_user = await store.get_user(u.id)
    assert stored_user is not None
    assert stored_user.password_hash == "new-hash"
    assert stored_user.password_changed_at == at
    stored_kept = await store.get_session(kept.id)
    assert stored_kept is not None
    assert stored_kept.authenticated_at == at
    assert not stored_kept.revoked


async def test_disable_client_ends_its_sessions(seeded: tuple[Store, User, Client]) -> None:
    store, u, c = seeded
    other_client = client("other")
    await store.add_client(other_client, event())
    mine, theirs = session(u, c), session(u, other_client)
    await store.create_session(mine, event())
    await store.create_session(theirs, event())
    assert await store.disable_client(c.id, T0, event(EventType.CLIENT_DISABLED)) == [
        EndedSession(mine.id, c.id)
    ]
    stored = await store.get_client(c.id)
    assert stored is not None
    assert not stored.enabled
    with pytest.raises(NotFound):
        await store.disable_client(ClientId("nope"), T0, event())


async def test_list_sessions_newest_first_by_user_and_revoked(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    bob = user("bob")
    await store.add_user(bob, event())
    old = session(u, c, created=T0)
    new = session(u, c, created=T0 + timedelta(minutes=1))
    bobs = session(bob, c, created=T0 + timedelta(minutes=2))
    for s in (old, new, bobs):
        await store.create_session(s, event())
    await store.revoke_session(old.id, RevocationReason.LOGOUT, T0, event())
    assert [s.id for s in await store.list_sessions(u.id)] == [new.id]
    assert [s.id for s in await store.list_sessions(u.id, include_revoked=True)] == [
        new.id,
        old.id,
    ]
    assert [s.id for s in await store.list_sessions()] == [bobs.id, new.id]


async def test_purge_deletes_in_batches_and_leaves_live_sessions(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    long_ago = T0 - timedelta(days=30)
    for _ in range(25):
        await store.create_session(session(u, c, created=long_ago), event())
    live = [session(u, c) for _ in range(5)]
    for s in live:
        await store.create_session(s, event())
    now = T0 + timedelta(minutes=1)
    counts = [await store.purge_expired(now, 86400, 10) for _ in range(4)]
    assert counts == [10, 10, 5, 0]
    assert {s.id for s in await store.list_sessions(include_revoked=True)} == {s.id for s in live}


async def test_list_revoked_pages_in_revocation_order(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    sessions = [session(u, c) for _ in range(5)]
    for s in sessions:
        await store.create_session(s, event())
    # Two revoked at the same instant: the id orders them.
    times = [T0 + timedelta(seconds=n) for n in (3, 1, 2, 2)]
    for s, at in zip(sessions, times, strict=False):
        await store.revoke_session(s.id, RevocationReason.LOGOUT, at, event())
    expected = sorted(zip(times, (s.id for s in sessions), strict=False))
    everything = await store.list_revoked(T0 - timedelta(days=1), "", 100)
    assert [(s.revoked_at, s.id) for s in everything] == expected
    assert sessions[4].id not in {s.id for s in everything}
    first = await store.list_revoked(T0 - timedelta(days=1), "", 2)
    last = first[-1]
    assert last.revoked_at is not None
    rest = await store.list_revoked(last.revoked_at, last.id, 100)
    assert [s.id for s in first + rest] == [sid for _, sid in expected]
    assert await store.list_revoked(T0 + timedelta(seconds=3), "~", 100) == []


def code(u: User, c: Client, *, created: datetime = T0, **kw: object) -> AuthorizationCode:
    values: dict[str, object] = {
        "code_hash": uuid.uuid4().hex * 2,
        "client_id": c.id,
        "user_id": u.id,
        "redirect_uri": "https://app.test/cb?keep=1",
        "redirect_uri_given": True,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "scope": frozenset({"read", "write"}),
        "authenticated_at": created - timedelta(seconds=3),
        "created_at": created,
        "expires_at": created + timedelta(seconds=60),
        "device": Device(user_agent="Firefox", ip="203.0.113.9"),
    }
    values.update(kw)
    return AuthorizationCode(**values)  # type: ignore[arg-type]


async def test_authorization_codes_round_trip_every_field(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    unused = code(u, c)
    await store.add_authorization_code(unused, event(EventType.LOGIN_SUCCEEDED))
    assert await store.get_authorization_code(unused.code_hash) == unused
    assert await store.get_authorization_code("0" * 64) is None
    with pytest.raises(AlreadyExists):
        await store.add_authorization_code(unused, event(EventType.LOGIN_SUCCEEDED))


async def test_redeeming_a_code_opens_its_session_once(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    issued = code(u, c)
    await store.add_authorization_code(issued, event(EventType.LOGIN_SUCCEEDED))
    opened = session(u, c)
    used_at = T0 + timedelta(seconds=5)
    assert await store.redeem_authorization_code(
        issued.code_hash, used_at, opened, event(EventType.SESSION_CREATED, session_id=opened.id)
    )
    assert await store.get_session(opened.id) == opened
    assert await store.get_authorization_code(issued.code_hash) == replace(
        issued, used_at=used_at, session_id=opened.id
    )
    # The second redemption changes nothing: no session, no event, the first kept.
    other = session(u, c)
    events_before = len(await store.list_events())
    assert not await store.redeem_authorization_code(
        issued.code_hash, used_at, other, event(EventType.SESSION_CREATED)
    )
    assert await store.get_session(other.id) is None
    assert len(await store.list_events()) == events_before
    stored = await store.get_authorization_code(issued.code_hash)
    assert stored is not None
    assert stored.session_id == opened.id
    assert not await store.redeem_authorization_code(
        "f" * 64, used_at, session(u, c), event(EventType.SESSION_CREATED)
    )


async def test_burning_a_code_uses_it_without_a_session(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    issued = code(u, c)
    await store.add_authorization_code(issued, event(EventType.LOGIN_SUCCEEDED))
    assert await store.redeem_authorization_code(
        issued.code_hash, T0, None, event(EventType.AUTHORIZATION_CODE_REFUSED)
    )
    burnt = await store.get_authorization_code(issued.code_hash)
    assert burnt is not None
    assert burnt.used
    assert burnt.session_id is None
    assert not await store.redeem_authorization_code(
        issued.code_hash, T0, session(u, c), event(EventType.SESSION_CREATED)
    )
    assert [e.event.type for e in await store.list_events()][-1] == (
        EventType.AUTHORIZATION_CODE_REFUSED
    )


async def test_sixteen_concurrent_redemptions_open_one_session(
    seeded: tuple[Store, User, Client],
) -> None:
    store, u, c = seeded
    issued = code(u, c)
    await store.add_authorization_code(issued, event(EventType.LOGIN_SUCCEEDED))
    candidates = [session(u, c) for _ in range(16)]
    results = await asyncio.gather(
        *(store.redeem_authorization_code(issued.code_hash, T0, s, event()) for s in candidates)
    )
    assert results.count(True) == 1
    winner = candidates[results.index(True)]
    assert [s.id for s in await store.list_sessions(u.id)] == [winner.id]


async def test_purge_deletes_long_expired_codes(seeded: tuple[Store, User, Client]) -> None:
    store, u, c = seeded
    old = code(u, c, created=T0 - timedelta(days=30))
    fresh = code(u, c)
    for each in (old, fresh):
        await store.add_authorization_code(each, event(EventType.LOGIN_SUCCEEDED))
    assert await store.purge_expired(T0, 86400, 10) == 1
    assert await store.get_authorization_code(old.code_hash) is None
    assert await store.get_authorization_code(fresh.code_hash) == fresh
    assert await store.purge_expired(T0, 86400, 10) == 0


async def test_keys_upsert_list_and_delete(store: Store) -> None:
    key = StoredKey(
        kid=KeyId("k1"),
        use=KeyUse.SIGNING,
        alg="ES256",
        state=KeyState.NEXT,
        public_jwk='{"kty":"EC"}',
        encrypted_private=b"\x01sealed",
        created_at=T0,
    )
    await store.save_keys([key], [event(EventType.KEY_CREATED)])
    active = replace(key, state=KeyState.ACTIVE, activated_at=T0 + timedelta(seconds=1))
    mac = replace(key, kid=KeyId("3"), use=KeyUse.REFRESH_MAC, public_jwk=None)
    await store.save_keys([active, mac], [event(EventType.KEY_ROTATED)])
    assert await store.list_keys() == [mac, active]  # by creation, then kid
    await store.delete_keys([KeyId("k1")])
    assert await store.list_keys() == [mac]


async def test_audit_lists_oldest_first_with_filters(store: Store) -> None:
    for minute, kind in enumerate([EventType.LOGIN_FAILED, EventType.LOGIN_SUCCEEDED] * 3):
        await store.record(event(kind, at=T0 + timedelta(minutes=minute), detail=f"m{minute}"))
    everything = await store.list_events()
    assert [r.event.detail for r in everything] == [f"m{i}" for i in range(6)]
    failed = await store.list_events(type=EventType.LOGIN_FAILED.value)
    assert [r.event.detail for r in failed] == ["m0", "m2", "m4"]
    recent = await store.list_events(since=T0 + timedelta(minutes=4))
    assert [r.event.detail for r in recent] == ["m4", "m5"]
    assert len(await store.list_events(limit=2)) == 2
    assert all(r.event.at.tzinfo is not None for r in everything)


@pytest.mark.parametrize("hostile", ["a\x00b", "\ud800", "x" * 10_000])
async def test_hostile_lookup_keys_find_nothing(
    seeded: tuple[Store, User, Client], hostile: str
) -> None:
    store, _, _ = seeded
    assert await store.find_user(hostile) is None
    assert await store.get_user(UserId(hostile)) is None
    assert await store.get_client(ClientId(hostile)) is None
    assert await store.get_session(SessionId(hostile)) is None
    assert await store.get_authorization_code(hostile) is None


async def test_ping(store: Store) -> None:
    await store.ping()
