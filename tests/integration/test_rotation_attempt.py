"""`Store.attempt_rotation`, the rotation in one round trip, on every backend.

Its guard is written three times: in Python (`keyturn.core.rotation.attempt_holds`,
which asks the rules themselves, and which the memory store calls), and as SQL in the
SQLite and the PostgreSQL adapters. Hypothesis draws every
kind of state a presentation can meet (a disabled or re-keyed user, a revoked or
expired session, an older or newer generation, another client, a wrong salt or secret,
deadlines exactly now) and each store must write exactly when the rules would rotate,
write exactly what the rules would, and hand back the presentation as it was.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_store_contract import T0, client, event, session, store, user  # noqa: F401 - fixture

from keyturn.core.audit import EventType
from keyturn.core.ids import ClientId, SessionId
from keyturn.core.models import (
    Attempted,
    Client,
    ClientType,
    NotRotated,
    Presentation,
    RevocationReason,
    Rotated,
    RotationAttempt,
    Session,
    User,
)
from keyturn.core.ports import Store
from keyturn.core.rotation import (
    Presented,
    Rotate,
    RotationPolicy,
    UserState,
    attempt_holds,
    attempted_session,
    decide,
)

SECRET = "sha256$" + "ab" * 32
OTHER_SECRET = "sha256$" + "cd" * 32
SALT = b"\x00\x01\x02\x03\x04\x05\x06\xff"
IDLE_TTL = 600

# Each condition of a rotation with the values that let it rotate, then those that
# must not (offsets in seconds from the moment of the attempt; 0 is "exactly now").
# A drawn state breaks none, one or a few of them, so that both answers, and each
# reason for the negative one, are drawn often.
GOOD: dict[str, list[object]] = {
    "client_known": [True],
    "client_enabled": [True],
    "secret_matches": [True],
    "session_known": [True],
    "session_of_other_client": [False],
    "revoked": [False],
    "absolute": [1, 3600],
    "idle": [1, 3600],
    "user_enabled": [True],
    "password_changed": [-3600, -1801, "authenticated"],
    "same_generation": [True],
    "salt_matches": [True],
}
BAD: dict[str, list[object]] = {
    "client_known": [False],
    "client_enabled": [False],
    "secret_matches": [False],
    "session_known": [False],
    "session_of_other_client": [True],
    "revoked": [True],
    "absolute": [-3600, -1, 0],
    "idle": [-3600, -1, 0],
    "user_enabled": [False],
    "password_changed": [1, 3600, "just after authenticated"],
    "same_generation": [False],
    "salt_matches": [False],
}


@st.composite
def states(draw: st.DrawFn) -> dict[str, object]:
    broken = draw(st.sets(st.sampled_from(sorted(GOOD)), max_size=3))
    state = {
        name: draw(st.sampled_from(BAD[name] if name in broken else GOOD[name])) for name in GOOD
    }
    state["confidential"] = draw(st.booleans())
    state["authenticated"] = draw(st.sampled_from([None, -1800, -1, 0]))
    state["generation"] = draw(st.integers(min_value=0, max_value=3))
    state["rotated_before"] = draw(st.booleans())
    return state


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@given(state=states())
async def test_the_attempt_writes_exactly_when_the_rules_rotate(
    store: Store,  # noqa: F811 - the fixture
    state: dict[str, object],
) -> None:
    await check_attempt(store, state)


def _one_fault() -> list[tuple[str, object]]:
    return [(name, value) for name in sorted(BAD) for value in BAD[name]]


@pytest.mark.parametrize(("broken", "value"), [("nothing", None), *_one_fault()])
async def test_each_condition_alone_stops_the_write_at_its_boundary(
    store: Store,  # noqa: F811 - the fixture
    broken: str,
    value: object,
) -> None:
    """Every state that breaks exactly one condition, with every value that breaks it
    (deadlines exactly now, a password changed a microsecond after authenticating),
    and the state that breaks none, on both kinds of client."""
    for confidential in (False, True):
        state: dict[str, object] = {name: GOOD[name][0] for name in GOOD}
        if broken != "nothing":
            state[broken] = value
        state |= {"confidential": confidential, "authenticated": None, "generation": 2}
        state["rotated_before"] = True
        await check_attempt(store, state)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@given(drawn=st.lists(states(), min_size=2, max_size=12))
async def test_attempts_made_together_each_write_exactly_when_the_rules_rotate(
    store: Store,  # noqa: F811 - the fixture
    drawn: list[dict[str, object]],
) -> None:
    """Attempts made in the same turn of the event loop (one statement on PostgreSQL)
    answer each as if it had been made alone."""
    prepared = [await prepare_attempt(store, state) for state in drawn]
    befores = [await read_before(store, attempt) for attempt, _ in prepared]
    attempted = await asyncio.gather(*(store.attempt_rotation(a) for a, _ in prepared))
    for (attempt, live), before, result in zip(prepared, befores, attempted, strict=True):
        await check_result(store, attempt, live, before, result)


async def test_together_on_shared_sessions_each_session_moves_once(
    store: Store,  # noqa: F811 - the fixture
) -> None:
    """Four attempts on each of three sessions, interleaved, in one turn: each session
    is rotated by exactly one of its four, the others find nothing written."""
    owner = user()
    await store.add_user(owner, event(EventType.USER_CREATED))
    presenting = client()
    await store.add_client(presenting, event(EventType.CLIENT_CREATED))
    at = T0 + timedelta(days=2)
    lives = []
    for _ in range(3):
        live = session(
            owner,
            presenting,
            created=at - timedelta(hours=1),
            generation=1,
            idle_expires_at=at + timedelta(hours=1),
            absolute_expires_at=at + timedelta(days=1),
        )
        await store.create_session(live, event(EventType.LOGIN_SUCCEEDED))
        lives.append(live)
    attempts = [
        RotationAttempt(
            session_id=live.id,
            client_id=presenting.id,
            client_secret_hash=None,
            salt=live.salt,
            generation=1,
            at=at,
            idle_ttl=IDLE_TTL,
        )
        for _ in range(4)
        for live in lives
    ]
    results = await asyncio.gather(*(store.attempt_rotation(a) for a in attempts))
    for live in lives:
        mine = [r for a, r in zip(attempts, results, strict=True) if a.session_id == live.id]
        moved = [r.session for r in mine if isinstance(r, Rotated)]
        assert len(moved) == 1
        # The others read the session as it was, or as the one that moved it left it
        # (a store that runs attempts one after another).
        assert all(
            r.presentation.session in (live, moved[0]) for r in mine if isinstance(r, NotRotated)
        )
        stored = await store.get_session(live.id)
        assert stored is not None
        assert stored.generation == 2


async def check_attempt(opened: Store, state: dict[str, object]) -> None:
    attempt, live = await prepare_attempt(opened, state)
    before = await read_before(opened, attempt)
    attempted = await opened.attempt_rotation(attempt)
    await check_result(opened, attempt, live, before, attempted)


async def read_before(
    opened: Store, attempt: RotationAttempt
) -> tuple[Presentation, Session | None]:
    """The presentation and the stored session before the attempt."""
    presentation = await opened.get_presentation(attempt.client_id, attempt.session_id)
    return presentation, await opened.get_session(attempt.session_id)


async def prepare_attempt(
    opened: Store, state: dict[str, object]
) -> tuple[RotationAttempt, Session]:
    """The clients, user and session `state` describes, stored; the attempt on them."""
    at = T0 + timedelta(days=2)

    def moment(offset: object) -> object:
        return at + timedelta(seconds=int(offset))  # type: ignore[call-overload]

    suffix = uuid.uuid4().hex[:10]
    confidential = bool(state["confidential"])
    presenting = replace(
        client(f"c-{suffix}"),
        type=ClientType.CONFIDENTIAL if confidential else ClientType.PUBLIC,
        secret_hash=SECRET if confidential else None,
        enabled=bool(state["client_enabled"]),
    )
    other = client(f"o-{suffix}")
    owner = replace(
        user(f"u-{suffix}"),
        enabled=bool(state["user_enabled"]),
        password_changed_at=_password_changed(state, at),
    )
    await opened.add_user(owner, event(EventType.USER_CREATED))
    await opened.add_client(other, event(EventType.CLIENT_CREATED))
    if state["client_known"]:
        await opened.add_client(presenting, event(EventType.CLIENT_CREATED))
    created = at - timedelta(hours=1)
    authenticated = state["authenticated"]
    generation = int(state["generation"])  # type: ignore[call-overload]
    authenticated_at = None if authenticated is None else moment(authenticated)
    live: Session = session(
        owner,
        # A session's client exists (a foreign key): an unknown client's is another's.
        other if state["session_of_other_client"] or not state["client_known"] else presenting,
        created=created,
        scope=frozenset({"read", "write"}),
        generation=generation,
        rotated_at=created + timedelta(minutes=5) if state["rotated_before"] else None,
        authenticated_at=authenticated_at,
        idle_expires_at=moment(state["idle"]),
        absolute_expires_at=moment(state["absolute"]),
        revoked_at=created + timedelta(minutes=1) if state["revoked"] else None,
        revoked_reason=RevocationReason.LOGOUT if state["revoked"] else None,
    )
    if state["session_known"]:
        await opened.create_session(live, event(EventType.LOGIN_SUCCEEDED))
    secret = SECRET if state["secret_matches"] else OTHER_SECRET
    attempt = RotationAttempt(
        session_id=live.id,
        client_id=presenting.id,
        client_secret_hash=secret if confidential else None,
        salt=SALT if state["salt_matches"] else b"\x09" * 8,
        generation=generation if state["same_generation"] else _other(generation),
        at=at,
        idle_ttl=IDLE_TTL,
    )

    return attempt, live


async def check_result(
    opened: Store,
    attempt: RotationAttempt,
    live: Session,
    read: tuple[Presentation, Session | None],
    attempted: Attempted,
) -> None:
    before, stored_before = read
    at = attempt.at
    after = await opened.get_session(live.id)

    expected = attempt_holds(attempt, before.client, before.session, before.user)
    assert expected == _rules_rotate(attempt, before.client, before.session, before.user)
    if expected:
        assert before.session is not None
        committed = attempted_session(attempt, before.session)
        assert attempted == Rotated(committed)
        assert after == committed
        assert committed.generation == attempt.generation + 1
        assert committed.idle_expires_at == min(
            at + timedelta(seconds=IDLE_TTL), live.absolute_expires_at
        )
    else:
        assert attempted == NotRotated(before)
        assert after == stored_before  # nothing written


def _rules_rotate(
    attempt: RotationAttempt, c: Client | None, s: Session | None, u: User | None
) -> bool:
    """The rules' answer, asked the way the service asks them: an enabled client
    authenticated by this secret, the token's salt, then `decide`."""
    if c is None or u is None or s is None:
        return False
    if not c.enabled or c.secret_hash != attempt.client_secret_hash or s.salt != attempt.salt:
        return False
    decision = decide(
        s,
        UserState(enabled=u.enabled, password_changed_at=u.password_changed_at),
        Presented(attempt.generation, attempt.client_id, None),
        RotationPolicy(retry_window=30, session_idle_ttl=attempt.idle_ttl),
        attempt.at,
    )
    return isinstance(decision, Rotate)


async def test_of_concurrent_attempts_on_one_generation_exactly_one_writes(
    store: Store,  # noqa: F811 - the fixture
) -> None:
    owner, presenting = user(), client()
    await store.add_user(owner, event(EventType.USER_CREATED))
    await store.add_client(presenting, event(EventType.CLIENT_CREATED))
    at = T0 + timedelta(minutes=5)
    live = session(owner, presenting, salt=SALT)
    await store.create_session(live, event(EventType.LOGIN_SUCCEEDED))
    for generation in range(5):
        attempt = RotationAttempt(
            session_id=live.id,
            client_id=presenting.id,
            client_secret_hash=None,
            salt=SALT,
            generation=generation,
            at=at,
            idle_ttl=IDLE_TTL,
        )
        results = await asyncio.gather(*(store.attempt_rotation(attempt) for _ in range(12)))
        assert sum(isinstance(r, Rotated) for r in results) == 1
        stored = await store.get_session(live.id)
        assert stored is not None
        assert stored.generation == generation + 1


@pytest.mark.parametrize(
    ("session_id", "client_id"),
    [
        ("not-a-uuid\x00", "native"),
        ("00000000-0000-4000-8000-000000000001", "\ud800"),
        ("00000000-0000-4000-8000-000000000001", "x" * 5000),
    ],
)
async def test_a_hostile_id_is_a_miss_not_an_error(
    store: Store,  # noqa: F811 - the fixture
    session_id: str,
    client_id: str,
) -> None:
    attempt = RotationAttempt(
        session_id=SessionId(session_id),
        client_id=ClientId(client_id),
        client_secret_hash=None,
        salt=SALT,
        generation=0,
        at=T0,
        idle_ttl=IDLE_TTL,
    )
    attempted = await store.attempt_rotation(attempt)
    assert isinstance(attempted, NotRotated)
    assert attempted.presentation.session is None


def _password_changed(state: dict[str, object], at: datetime) -> datetime:
    """The user's `password_changed_at`: before or at the session's authentication (it
    may rotate), or after it (it may not). A session authenticated at login has
    `authenticated_at` None and authenticated when it was created, an hour before `at`."""
    authenticated = state["authenticated"]
    auth_time = at - timedelta(hours=1)
    if authenticated is not None:
        auth_time = at + timedelta(seconds=int(authenticated))  # type: ignore[call-overload]
    offset = state["password_changed"]
    if offset == "authenticated":
        return auth_time
    if offset == "just after authenticated":
        return auth_time + timedelta(microseconds=1)
    moment = at + timedelta(seconds=int(offset))  # type: ignore[call-overload]
    good = offset in GOOD["password_changed"]
    # An offset relative to `at` says nothing of the session's own authentication:
    # keep the drawn side of it.
    return min(moment, auth_time) if good else max(moment, auth_time + timedelta(seconds=1))


def _other(generation: int) -> int:
    return generation + 1 if generation % 2 == 0 else generation - 1
