"""The rotation decision, rule by rule (DESIGN.md, "The rotation rules").

Each test pins one rule: removing or reordering the rule makes it fail.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import RevocationReason, Session
from keyturn.core.rotation import (
    Presented,
    Refusal,
    Refuse,
    Replay,
    Revoke,
    Rotate,
    RotationPolicy,
    UserState,
    decide,
    is_reuse,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GRACE = 10
IDLE = 3600
POLICY = RotationPolicy(grace_seconds=GRACE, session_idle_ttl=IDLE)
OWNER = ClientId("native")
USER = UserState(enabled=True, password_changed_at=T0 - timedelta(days=1))


def session(**changes: object) -> Session:
    base = Session(
        id=SessionId("00000000-0000-4000-8000-000000000001"),
        user_id=UserId("00000000-0000-4000-8000-0000000000aa"),
        client_id=OWNER,
        scope=frozenset({"read", "write"}),
        salt=b"12345678",
        generation=5,
        mac_key_id=1,
        created_at=T0,
        last_used_at=T0 + timedelta(seconds=100),
        rotated_at=T0 + timedelta(seconds=100),
        idle_expires_at=T0 + timedelta(seconds=100 + IDLE),
        absolute_expires_at=T0 + timedelta(days=30),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def at(seconds_after_rotation: float) -> datetime:
    return T0 + timedelta(seconds=100 + seconds_after_rotation)


def present(generation: int, client: ClientId = OWNER, scope: set[str] | None = None) -> Presented:
    return Presented(generation, client, frozenset(scope) if scope is not None else None)


# Rule 2: another client's token is refused with no revocation.


def test_foreign_client_is_refused_without_revocation() -> None:
    decision = decide(session(), USER, present(5, ClientId("other")), POLICY, at(1))
    assert decision == Refuse(Refusal.FOREIGN_CLIENT)


def test_foreign_client_presenting_an_old_token_does_not_end_the_session() -> None:
    # Rule 2 comes before reuse detection: a cross-client replay of a rotated-out
    # token must not let another client end the victim's session.
    decision = decide(session(), USER, present(1, ClientId("other")), POLICY, at(60))
    assert decision == Refuse(Refusal.FOREIGN_CLIENT)


# Rule 3: dead or due-to-die sessions.


def test_revoked_session_is_refused_and_not_revoked_again() -> None:
    s = session(revoked_at=at(0), revoked_reason=RevocationReason.LOGOUT)
    assert decide(s, USER, present(5), POLICY, at(1)) == Refuse(Refusal.ALREADY_REVOKED)


def test_revoked_session_refuses_its_grace_replay_too() -> None:
    s = session(revoked_at=at(0), revoked_reason=RevocationReason.REUSE_DETECTED)
    assert decide(s, USER, present(4), POLICY, at(1)) == Refuse(Refusal.ALREADY_REVOKED)


def test_past_absolute_deadline_revokes() -> None:
    s = session(absolute_expires_at=at(5))
    assert decide(s, USER, present(5), POLICY, at(5)) == Revoke(RevocationReason.ABSOLUTE_EXPIRED)


def test_past_idle_deadline_revokes() -> None:
    s = session(idle_expires_at=at(5))
    assert decide(s, USER, present(5), POLICY, at(5)) == Revoke(RevocationReason.IDLE_EXPIRED)


def test_one_moment_before_the_idle_deadline_still_rotates() -> None:
    s = session(idle_expires_at=at(5))
    assert isinstance(decide(s, USER, present(5), POLICY, at(4.999)), Rotate)


def test_disabled_user_revokes() -> None:
    user = replace(USER, enabled=False)
    assert decide(session(), user, present(5), POLICY, at(1)) == Revoke(
        RevocationReason.USER_DISABLED
    )


def test_password_changed_after_login_revokes() -> None:
    user = replace(USER, password_changed_at=T0 + timedelta(seconds=1))
    assert decide(session(), user, present(5), POLICY, at(1)) == Revoke(
        RevocationReason.PASSWORD_CHANGED
    )


def test_session_that_proved_the_new_password_survives_the_change() -> None:
    user = replace(USER, password_changed_at=T0 + timedelta(seconds=50))
    s = session(authenticated_at=T0 + timedelta(seconds=50))
    assert isinstance(decide(s, user, present(5), POLICY, at(1)), Rotate)


def test_expiry_is_checked_before_reuse() -> None:
    # An expired session presented with an old token is simply expired: the reason
    # recorded must not claim a theft that cannot be told apart from expiry.
    s = session(idle_expires_at=at(5))
    assert decide(s, USER, present(1), POLICY, at(6)) == Revoke(RevocationReason.IDLE_EXPIRED)


# Rule 4 and 6: the live token rotates.


def test_live_token_rotates_to_the_next_generation() -> None:
    decision = decide(session(), USER, present(5), POLICY, at(1))
    assert decision == Rotate(
        from_generation=5,
        idle_expires_at=at(1) + timedelta(seconds=IDLE),
        scope=frozenset({"read", "write"}),
    )
    assert isinstance(decision, Rotate)
    assert decision.to_generation == 6


def test_rotation_never_extends_the_idle_deadline_past_the_absolute_one() -> None:
    s = session(absolute_expires_at=at(30))
    decision = decide(s, USER, present(5), POLICY, at(1))
    assert isinstance(decision, Rotate)
    assert decision.idle_expires_at == at(30)


def test_narrower_scope_narrows_the_access_token_only() -> None:
    decision = decide(session(), USER, present(5, scope={"read"}), POLICY, at(1))
    assert isinstance(decision, Rotate)
    assert decision.scope == frozenset({"read"})


def test_wider_scope_is_refused_before_anything_is_consumed() -> None:
    decision = decide(session(), USER, present(5, scope={"read", "admin"}), POLICY, at(1))
    assert decision == Refuse(Refusal.SCOPE_TOO_WIDE)


# Rule 5: replay, reuse and the future.


def test_parent_within_grace_replays_the_live_generation() -> None:
    assert decide(session(), USER, present(4), POLICY, at(GRACE)) == Replay(
        generation=5, scope=frozenset({"read", "write"})
    )


def test_parent_after_grace_is_reuse() -> None:
    assert decide(session(), USER, present(4), POLICY, at(GRACE + 0.001)) == Revoke(
        RevocationReason.REUSE_DETECTED
    )


def test_grandparent_is_reuse_even_within_grace() -> None:
    assert decide(session(), USER, present(3), POLICY, at(1)) == Revoke(
        RevocationReason.REUSE_DETECTED
    )


def test_grace_zero_turns_replay_off() -> None:
    strict = RotationPolicy(grace_seconds=0, session_idle_ttl=IDLE)
    assert decide(session(), USER, present(4), strict, at(0)) == Revoke(
        RevocationReason.REUSE_DETECTED
    )


def test_replay_with_wider_scope_is_refused() -> None:
    decision = decide(session(), USER, present(4, scope={"admin"}), POLICY, at(1))
    assert decision == Refuse(Refusal.SCOPE_TOO_WIDE)


def test_replay_with_narrower_scope_narrows() -> None:
    decision = decide(session(), USER, present(4, scope={"write"}), POLICY, at(1))
    assert decision == Replay(generation=5, scope=frozenset({"write"}))


def test_future_generation_is_refused_not_revoked() -> None:
    assert decide(session(), USER, present(6), POLICY, at(1)) == Refuse(Refusal.FUTURE_GENERATION)


def test_generation_zero_has_no_parent_to_replay() -> None:
    s = session(generation=0, rotated_at=None)
    assert isinstance(decide(s, USER, present(0), POLICY, at(1)), Rotate)


def test_session_never_rotated_has_no_grace() -> None:
    s = session(generation=1, rotated_at=None)
    assert decide(s, USER, present(0), POLICY, at(1)) == Revoke(RevocationReason.REUSE_DETECTED)


def test_is_reuse_of_live_and_future_generations_is_false() -> None:
    assert not is_reuse(session(), 5, POLICY, at(1000))
    assert not is_reuse(session(), 6, POLICY, at(1000))


def test_policy_rejects_negative_grace_and_non_positive_idle() -> None:
    with pytest.raises(ValueError, match="grace"):
        RotationPolicy(grace_seconds=-1, session_idle_ttl=1)
    with pytest.raises(ValueError, match="idle"):
        RotationPolicy(grace_seconds=0, session_idle_ttl=0)


# Properties over all generations and times.


@given(
    live=st.integers(min_value=0, max_value=10_000),
    presented=st.integers(min_value=0, max_value=10_010),
    elapsed=st.floats(min_value=0, max_value=3000, allow_nan=False),
    grace=st.integers(min_value=0, max_value=60),
)
def test_decision_matches_the_generation_arithmetic(
    live: int, presented: int, elapsed: float, grace: int
) -> None:
    s = session(generation=live, rotated_at=at(0) if live > 0 else None)
    policy = RotationPolicy(grace_seconds=grace, session_idle_ttl=IDLE)
    decision = decide(s, USER, present(presented), policy, at(elapsed))
    if presented == live:
        assert isinstance(decision, Rotate)
        assert decision.to_generation == live + 1
    elif presented > live:
        assert decision == Refuse(Refusal.FUTURE_GENERATION)
    elif presented == live - 1 and grace > 0 and elapsed <= grace:
        # I4: a replay never advances the generation and names the live one.
        assert decision == Replay(generation=live, scope=s.scope)
    else:
        assert decision == Revoke(RevocationReason.REUSE_DETECTED)


@given(
    elapsed=st.integers(min_value=0, max_value=40 * 86400),
    idle=st.integers(min_value=1, max_value=30 * 86400),
)
def test_idle_deadline_after_rotation_is_bounded_by_the_absolute_one(
    elapsed: int, idle: int
) -> None:
    s = session(idle_expires_at=T0 + timedelta(days=60))
    policy = RotationPolicy(grace_seconds=GRACE, session_idle_ttl=idle)
    decision = decide(s, USER, present(5), policy, T0 + timedelta(seconds=elapsed))
    if isinstance(decision, Rotate):
        assert decision.idle_expires_at <= s.absolute_expires_at
    else:
        assert decision == Revoke(RevocationReason.ABSOLUTE_EXPIRED)
