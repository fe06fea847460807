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
from keyturn.core.policy import NO_LIMIT, ReplayBudget, ReplayLog
from keyturn.core.rotation import (
    CONCURRENT_SECONDS,
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
    decide,
    is_reuse,
    outcome_of,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GRACE = 10
IDLE = 3600
POLICY = RotationPolicy(retry_window=GRACE, session_idle_ttl=IDLE)
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


def present(
    generation: int,
    client: ClientId = OWNER,
    scope: set[str] | None = None,
    key: str | None = None,
) -> Presented:
    return Presented(generation, client, frozenset(scope) if scope is not None else None, key)


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
    s = session(revoked_at=at(0), revoked_reason=RevocationReason.REUSE_OUTSIDE_WINDOW)
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
        generation=5,
        scope=frozenset({"read", "write"}),
        outcome=RefreshOutcome.REPLAYED_LOST_RESPONSE,
        log=ReplayLog(4, 1),
    )


def test_parent_after_grace_is_reuse() -> None:
    assert decide(session(), USER, present(4), POLICY, at(GRACE + 0.001)) == Revoke(
        RevocationReason.REUSE_OUTSIDE_WINDOW
    )


def test_grandparent_is_reuse_even_within_grace() -> None:
    assert decide(session(), USER, present(3), POLICY, at(1)) == Revoke(
        RevocationReason.REUSE_OUTSIDE_WINDOW
    )


def test_grace_zero_turns_replay_off() -> None:
    strict = RotationPolicy(retry_window=0, session_idle_ttl=IDLE)
    assert decide(session(), USER, present(4), strict, at(0)) == Revoke(
        RevocationReason.REUSE_OUTSIDE_WINDOW
    )


def test_replay_with_wider_scope_is_refused() -> None:
    decision = decide(session(), USER, present(4, scope={"admin"}), POLICY, at(1))
    assert decision == Refuse(Refusal.SCOPE_TOO_WIDE)


def test_replay_with_narrower_scope_narrows() -> None:
    decision = decide(session(), USER, present(4, scope={"write"}), POLICY, at(1))
    assert decision == Replay(
        generation=5,
        scope=frozenset({"write"}),
        outcome=RefreshOutcome.REPLAYED_CONCURRENT,
        log=ReplayLog(4, 1),
    )


def test_future_generation_is_refused_not_revoked() -> None:
    assert decide(session(), USER, present(6), POLICY, at(1)) == Refuse(Refusal.FUTURE_GENERATION)


def test_generation_zero_has_no_parent_to_replay() -> None:
    s = session(generation=0, rotated_at=None)
    assert isinstance(decide(s, USER, present(0), POLICY, at(1)), Rotate)


def test_session_never_rotated_has_no_grace() -> None:
    s = session(generation=1, rotated_at=None)
    assert decide(s, USER, present(0), POLICY, at(1)) == Revoke(
        RevocationReason.REUSE_OUTSIDE_WINDOW
    )


def test_is_reuse_of_live_and_future_generations_is_false() -> None:
    assert not is_reuse(session(), 5, POLICY, at(1000))
    assert not is_reuse(session(), 6, POLICY, at(1000))


def test_policy_rejects_negative_grace_and_non_positive_idle() -> None:
    with pytest.raises(ValueError, match="window"):
        RotationPolicy(retry_window=-1, session_idle_ttl=1)
    with pytest.raises(ValueError, match="idle"):
        RotationPolicy(retry_window=0, session_idle_ttl=0)


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
    policy = RotationPolicy(retry_window=grace, session_idle_ttl=IDLE)
    decision = decide(s, USER, present(presented), policy, at(elapsed))
    if presented == live:
        assert isinstance(decision, Rotate)
        assert decision.to_generation == live + 1
    elif presented > live:
        assert decision == Refuse(Refusal.FUTURE_GENERATION)
    elif presented == live - 1 and grace > 0 and elapsed <= grace:
        # I4: a replay never advances the generation and names the live one.
        assert isinstance(decision, Replay)
        assert (decision.generation, decision.scope) == (live, s.scope)
    else:
        assert decision == Revoke(RevocationReason.REUSE_OUTSIDE_WINDOW)


@given(
    elapsed=st.integers(min_value=0, max_value=40 * 86400),
    idle=st.integers(min_value=1, max_value=30 * 86400),
)
def test_idle_deadline_after_rotation_is_bounded_by_the_absolute_one(
    elapsed: int, idle: int
) -> None:
    s = session(idle_expires_at=T0 + timedelta(days=60))
    policy = RotationPolicy(retry_window=GRACE, session_idle_ttl=idle)
    decision = decide(s, USER, present(5), policy, T0 + timedelta(seconds=elapsed))
    if isinstance(decision, Rotate):
        assert decision.idle_expires_at <= s.absolute_expires_at
    else:
        assert decision == Revoke(RevocationReason.ABSOLUTE_EXPIRED)


# Retry windows, replay budgets, rotation off, key continuity (docs/rotation-policies.md).


def test_replay_soon_after_the_rotation_is_concurrent_and_later_a_lost_response() -> None:
    soon = decide(session(), USER, present(4), POLICY, at(CONCURRENT_SECONDS))
    later = decide(session(), USER, present(4), POLICY, at(CONCURRENT_SECONDS + 0.001))
    assert isinstance(soon, Replay)
    assert soon.outcome is RefreshOutcome.REPLAYED_CONCURRENT
    assert isinstance(later, Replay)
    assert later.outcome is RefreshOutcome.REPLAYED_LOST_RESPONSE


def test_unbounded_window_replays_the_parent_days_later() -> None:
    fapi = RotationPolicy(retry_window=NO_LIMIT, session_idle_ttl=IDLE)
    s = session(idle_expires_at=at(10 * 86400))
    assert isinstance(decide(s, USER, present(4), fapi, at(3 * 86400)), Replay)


def test_unbounded_window_closes_once_the_successor_is_rotated() -> None:
    # The successor's own rotation proves the response arrived: the grandparent is
    # reuse however generous the window.
    fapi = RotationPolicy(retry_window=NO_LIMIT, session_idle_ttl=IDLE)
    assert decide(session(), USER, present(3), fapi, at(1)) == Revoke(
        RevocationReason.REUSE_OUTSIDE_WINDOW
    )


BUDGET = RotationPolicy(
    retry_window=NO_LIMIT, session_idle_ttl=IDLE, replay_budget=ReplayBudget(2, 8)
)


def test_replays_within_the_budget_are_answered_and_logged() -> None:
    s = session(replays=ReplayLog(3, 0b1))  # generation 3 was replayed
    decision = decide(s, USER, present(4), BUDGET, at(60))
    assert isinstance(decision, Replay)
    assert decision.log == ReplayLog(4, 0b11)


def test_one_replay_past_the_budget_ends_the_session() -> None:
    s = session(replays=ReplayLog(3, 0b101))  # generations 3 and 1 were replayed
    assert decide(s, USER, present(4), BUDGET, at(60)) == Revoke(
        RevocationReason.REPLAY_BUDGET_EXCEEDED
    )


def test_replays_of_one_generation_count_once() -> None:
    # Five tabs present the same stale token: one replayed generation, not five.
    s = session(replays=ReplayLog(4, 0b11))  # 4 and 3: the budget is spent
    decision = decide(s, USER, present(4), BUDGET, at(1))
    assert isinstance(decision, Replay)
    assert decision.log == s.replays


def test_replays_older_than_the_budgets_span_are_forgotten() -> None:
    s = session(generation=20, replays=ReplayLog(10, 0b111))  # 10, 9, 8: 10 generations ago
    assert isinstance(decide(s, USER, present(19), BUDGET, at(60)), Replay)


def test_a_wider_scope_on_replay_spends_no_budget() -> None:
    s = session(replays=ReplayLog(3, 0b101))
    assert decide(s, USER, present(4, scope={"admin"}), BUDGET, at(60)) == Refuse(
        Refusal.SCOPE_TOO_WIDE
    )


def test_rotation_off_keeps_the_live_token() -> None:
    kept = RotationPolicy(retry_window=0, session_idle_ttl=IDLE, rotate=False)
    decision = decide(session(), USER, present(5), kept, at(60))
    assert decision == Keep(generation=5, idle_expires_at=at(60 + IDLE), scope=session().scope)


BOUND = RotationPolicy(retry_window=GRACE, session_idle_ttl=IDLE, same_key_generations=3)


def test_bound_token_without_a_proof_ends_the_session_even_when_live() -> None:
    s = session(dpop_jkt="key-a")
    assert decide(s, USER, present(5), BOUND, at(1)) == Revoke(RevocationReason.REUSE_KEY_MISMATCH)
    assert decide(s, USER, present(5, key="key-b"), BOUND, at(1)) == Revoke(
        RevocationReason.REUSE_KEY_MISMATCH
    )


def test_bound_token_with_its_key_rotates() -> None:
    s = session(dpop_jkt="key-a")
    assert isinstance(decide(s, USER, present(5, key="key-a"), BOUND, at(1)), Rotate)


def test_same_key_replays_older_generations_outside_any_window_without_budget() -> None:
    s = session(dpop_jkt="key-a", replays=ReplayLog(4, 0b1111), idle_expires_at=at(10 * 86400))
    decision = decide(s, USER, present(2, key="key-a"), BOUND, at(86400))
    assert isinstance(decision, Replay)
    assert decision.outcome is RefreshOutcome.REPLAYED_SAME_KEY
    assert decision.log == s.replays  # key continuity spends no budget


def test_same_key_beyond_its_generations_is_reuse() -> None:
    s = session(dpop_jkt="key-a")
    assert decide(s, USER, present(1, key="key-a"), BOUND, at(1)) == Revoke(
        RevocationReason.REUSE_OUTSIDE_WINDOW
    )


def test_future_generation_of_a_bound_session_is_refused_whatever_the_key() -> None:
    s = session(dpop_jkt="key-a")
    assert decide(s, USER, present(9), BOUND, at(1)) == Refuse(Refusal.FUTURE_GENERATION)


def test_every_decision_has_one_outcome() -> None:
    assert outcome_of(Revoke(RevocationReason.IDLE_EXPIRED)) is RefreshOutcome.IDLE_EXPIRED
    assert outcome_of(Refuse(Refusal.ALREADY_REVOKED)) is RefreshOutcome.SESSION_ENDED
    assert outcome_of(Keep(5, at(1), frozenset())) is RefreshOutcome.KEPT


@given(
    replayed=st.lists(st.integers(min_value=0, max_value=200), max_size=40),
    live=st.integers(min_value=1, max_value=260),
    last=st.integers(min_value=1, max_value=62),
)
def test_replay_log_counts_exactly_the_replayed_generations_in_its_span(
    replayed: list[int], live: int, last: int
) -> None:
    log = ReplayLog()
    for generation in sorted(replayed):
        log = log.with_replay(generation)
    newest = max(replayed, default=-1)
    remembered = {g for g in replayed if newest - g < 62}
    assert log.count(live, last) == len({g for g in remembered if live - last <= g < live})


@given(
    lost=st.lists(st.booleans(), min_size=1, max_size=60),
    budget=st.integers(min_value=0, max_value=7),
)
def test_a_thief_in_lockstep_is_caught_within_the_budget(lost: list[bool], budget: int) -> None:
    """Whatever else happens, a session whose every generation is replayed ends by the
    replay after the budget."""
    policy = RotationPolicy(
        retry_window=NO_LIMIT, session_idle_ttl=IDLE, replay_budget=ReplayBudget(budget, 16)
    )
    s = session(generation=1, replays=ReplayLog())
    for n in range(len(lost) + budget + 2):
        decision = decide(s, USER, present(s.generation - 1), policy, at(60))
        if isinstance(decision, Revoke):
            assert decision.reason is RevocationReason.REPLAY_BUDGET_EXCEEDED
            assert n == budget
            return
        assert isinstance(decision, Replay)
        s = replace(s, generation=s.generation + 1, replays=decision.log)
    raise AssertionError("the lockstep thief was never caught")


def test_a_concurrent_replay_from_the_rotating_address_spends_no_budget() -> None:
    """Tabs, a server-side fan-out, processes of one agent: the parent presented within
    seconds of the rotation from the address that rotated."""
    s = session(rotated_ip="192.0.2.7", replays=ReplayLog(3, 0b101))
    decision = decide(s, USER, replace(present(4), ip="192.0.2.7"), BUDGET, at(CONCURRENT_SECONDS))
    assert decision == Replay(5, s.scope, RefreshOutcome.REPLAYED_CONCURRENT, s.replays)


def test_a_concurrent_replay_from_another_address_spends_the_budget() -> None:
    s = session(rotated_ip="192.0.2.7", replays=ReplayLog(3, 0b101))
    decision = decide(s, USER, replace(present(4), ip="198.51.100.9"), BUDGET, at(1))
    assert decision == Revoke(RevocationReason.REPLAY_BUDGET_EXCEEDED)


def test_a_later_replay_from_the_rotating_address_spends_the_budget() -> None:
    s = session(rotated_ip="192.0.2.7")
    later = at(CONCURRENT_SECONDS + 0.001)
    decision = decide(s, USER, replace(present(4), ip="192.0.2.7"), BUDGET, later)
    assert isinstance(decision, Replay)
    assert decision.log == ReplayLog(4, 1)


def test_no_address_is_no_exemption() -> None:
    s = session(rotated_ip=None)
    decision = decide(s, USER, present(4), BUDGET, at(1))
    assert isinstance(decision, Replay)
    assert decision.log == ReplayLog(4, 1)
