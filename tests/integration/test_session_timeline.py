"""A session's timeline on every store: its events read by session (keyset pages,
hostile ids a miss), and the use case that tells its story — login, rotations,
replays, the end and its reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keyturn.core.audit import EventType
from keyturn.core.ids import SessionId
from keyturn.core.ports import Store
from keyturn.storage import open_store
from support.store_values import a_client, a_session, a_user, an_event

HOSTILE_IDS = ["", "\x00", "a\x00b", "\ud800", "x\udfffy", "' OR 1=1 --", "%", "é" * 300]


@pytest.fixture
async def store(store_url: tuple[str, str | None]) -> AsyncIterator[Store]:
    url, schema = store_url
    opened = await open_store(url, timeout=5, schema=schema)
    yield opened
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
