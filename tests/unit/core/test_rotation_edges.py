"""The rotation rules at their edges: a clock stepped back past the rotation (H-19), a
bound session's own key asking for more scope, the outcome of every decision, and the
guard a store writes for a one-statement rotation (`attempt_holds`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import (
    Client,
    ClientType,
    Delivery,
    GrantType,
    LifetimeOverrides,
    RevocationReason,
    RotationAttempt,
    Session,
    User,
)
from keyturn.core.policy import NO_LIMIT, ReplayBudget, ReplayLog
from keyturn.core.rotation import (
    Keep,
    Presented,
    RefreshOutcome,
    Refusal,
    Refuse,
    Replay,
    Revoke,
    Rotate,
    RotationPolicy,
    UserState,
    attempt_holds,
    attempted_session,
    decide,
    outcome_of,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
IDLE = 3600
ROTATED = T0 + timedelta(seconds=100)
OWNER = ClientId("native")
USER_ID = UserId("00000000-0000-4000-8000-0000000000aa")
USER = UserState(enabled=True, password_changed_at=T0 - timedelta(days=1))
SESSION = Session(
    id=SessionId("00000000-0000-4000-8000-000000000001"),
    user_id=USER_ID,
    client_id=OWNER,
    scope=frozenset({"read", "write"}),
    salt=b"12345678",
    generation=5,
    mac_key_id=1,
    created_at=T0,
    last_used_at=ROTATED,
    rotated_at=ROTATED,
    idle_expires_at=ROTATED + timedelta(seconds=IDLE),
    absolute_expires_at=T0 + timedelta(days=30),
)


def test_a_policy_refuses_a_negative_window_idle_lifetime_or_key_generations() -> None:
    with pytest.raises(ValueError, match="retry window"):
        RotationPolicy(retry_window=-1, session_idle_ttl=IDLE)
    with pytest.raises(ValueError, match="idle lifetime"):
        RotationPolicy(retry_window=10, session_idle_ttl=0)
    with pytest.raises(ValueError, match="same-key generations"):
        RotationPolicy(retry_window=10, session_idle_ttl=IDLE, same_key_generations=-1)


def test_h19_under_a_clock_stepped_back_the_parent_is_answered_once_then_refused() -> None:
    # No budget of its own: the default one counts the replays meanwhile.
    policy = RotationPolicy(retry_window=10, session_idle_ttl=IDLE, replay_budget=NO_LIMIT)
    stepped_back = ROTATED - timedelta(seconds=30)
    first = decide(SESSION, USER, Presented(4, OWNER, None), policy, stepped_back)
    assert first == Replay(
        5, SESSION.scope, RefreshOutcome.REPLAYED_LOST_RESPONSE, ReplayLog().with_replay(4)
    )
    answered = replace(SESSION, replays=first.log)
    again = decide(answered, USER, Presented(4, OWNER, None), policy, stepped_back)
    assert again == Refuse(Refusal.CLOCK_STEPPED_BACK)


def test_h19_under_a_clock_stepped_back_a_clients_own_budget_still_counts() -> None:
    policy = RotationPolicy(
        retry_window=10, session_idle_ttl=IDLE, replay_budget=ReplayBudget(0, 4)
    )
    stepped_back = ROTATED - timedelta(seconds=30)
    decision = decide(SESSION, USER, Presented(4, OWNER, None), policy, stepped_back)
    assert decision == Revoke(RevocationReason.REPLAY_BUDGET_EXCEEDED)


def test_a_bound_sessions_own_key_asking_for_more_scope_is_refused_not_replayed() -> None:
    bound = replace(SESSION, dpop_jkt="key-a")
    policy = RotationPolicy(retry_window=10, session_idle_ttl=IDLE, same_key_generations=3)
    wider = Presented(4, OWNER, frozenset({"admin"}), "key-a")
    assert decide(bound, USER, wider, policy, ROTATED) == Refuse(Refusal.SCOPE_TOO_WIDE)


def test_a_rotation_a_kept_token_and_a_replay_answer_with_their_own_outcomes() -> None:
    rotated = Rotate(5, ROTATED + timedelta(seconds=IDLE), SESSION.scope)
    assert outcome_of(rotated) is RefreshOutcome.ROTATED
    kept = Keep(5, ROTATED + timedelta(seconds=IDLE), SESSION.scope)
    assert outcome_of(kept) is RefreshOutcome.KEPT
    replay = Replay(5, SESSION.scope, RefreshOutcome.REPLAYED_SAME_KEY, ReplayLog())
    assert outcome_of(replay) is RefreshOutcome.REPLAYED_SAME_KEY


CLIENT = Client(
    id=OWNER,
    type=ClientType.CONFIDENTIAL,
    secret_hash="secret-hash",
    redirect_uris=(),
    grant_types=frozenset({GrantType.REFRESH_TOKEN}),
    scope=frozenset({"read", "write"}),
    delivery=Delivery.BODY,
    audience=(),
    lifetimes=LifetimeOverrides(),
    enabled=True,
    created_at=T0,
)
USER_ROW = User(USER_ID, "alice", "$argon2id$...", True, T0, T0 - timedelta(days=1))
AT = ROTATED + timedelta(seconds=60)
ATTEMPT = RotationAttempt(
    session_id=SESSION.id,
    client_id=OWNER,
    client_secret_hash="secret-hash",
    salt=SESSION.salt,
    generation=5,
    at=AT,
    idle_ttl=IDLE,
    ip="192.0.2.7",
)


def test_an_attempt_holds_on_the_live_generation_of_its_clients_live_session() -> None:
    assert attempt_holds(ATTEMPT, CLIENT, SESSION, USER_ROW)


@pytest.mark.parametrize(
    ("client", "session", "user"),
    [
        (None, SESSION, USER_ROW),
        (CLIENT, None, USER_ROW),
        (CLIENT, SESSION, None),
        (replace(CLIENT, enabled=False), SESSION, USER_ROW),
        (replace(CLIENT, secret_hash="another"), SESSION, USER_ROW),
        (CLIENT, replace(SESSION, salt=b"87654321"), USER_ROW),
        (CLIENT, SESSION, replace(USER_ROW, id=UserId("00000000-0000-4000-8000-0000000000bb"))),
        (CLIENT, SESSION, replace(USER_ROW, enabled=False)),
        (CLIENT, replace(SESSION, generation=6), USER_ROW),
    ],
    ids=[
        "no client",
        "no session",
        "no user",
        "client disabled",
        "another secret",
        "another salt",
        "another user",
        "user disabled",
        "not the live generation",
    ],
)
def test_an_attempt_does_not_hold_when_any_fact_it_was_made_on_differs(
    client: Client | None, session: Session | None, user: User | None
) -> None:
    assert not attempt_holds(ATTEMPT, client, session, user)


def test_a_held_attempt_advances_the_session_and_pushes_its_idle_deadline() -> None:
    after = attempted_session(ATTEMPT, SESSION)
    assert (after.generation, after.rotated_at, after.rotated_ip, after.last_used_at) == (
        6,
        AT,
        "192.0.2.7",
        AT,
    )
    assert after.idle_expires_at == AT + timedelta(seconds=IDLE)
    near_the_end = replace(SESSION, absolute_expires_at=AT + timedelta(seconds=5))
    assert attempted_session(ATTEMPT, near_the_end).idle_expires_at == AT + timedelta(seconds=5)
