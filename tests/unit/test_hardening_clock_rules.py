"""One clock (H-18, H-19), without processes: the rules under a clock read before the
rotation they judge, and the clocks a deployment reads (`keyturn.storage.clocks`),
driven by sources the test moves."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import RevocationReason, Session
from keyturn.core.policy import DEFAULT_BUDGET, NO_LIMIT, ReplayBudget, ReplayLog
from keyturn.core.rotation import (
    CLOCK_TOLERANCE,
    Presented,
    RefreshOutcome,
    Refusal,
    Refuse,
    Replay,
    Revoke,
    RotationPolicy,
    UserState,
    decide,
    is_reuse,
    outcome_of,
)
from keyturn.storage.clocks import (
    RESAMPLE_SECONDS,
    STEP_HOLD_SECONDS,
    DatabaseClock,
    HostClock,
    SteadyTime,
    deployment_clock,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROTATED = T0 + timedelta(seconds=100)
WINDOW = 10
IDLE = 3600
POLICY = RotationPolicy(retry_window=WINDOW, session_idle_ttl=IDLE, replay_budget=DEFAULT_BUDGET)
OWNER = ClientId("native")
USER = UserState(enabled=True, password_changed_at=T0 - timedelta(days=1))
IP = "192.0.2.7"
HOUR = timedelta(hours=1)


def session(**changes: object) -> Session:
    base = Session(
        id=SessionId("00000000-0000-4000-8000-000000000001"),
        user_id=UserId("00000000-0000-4000-8000-0000000000aa"),
        client_id=OWNER,
        scope=frozenset({"read"}),
        salt=b"12345678",
        generation=5,
        mac_key_id=1,
        created_at=T0,
        last_used_at=ROTATED,
        rotated_at=ROTATED,
        idle_expires_at=ROTATED + timedelta(seconds=IDLE),
        absolute_expires_at=T0 + timedelta(days=30),
        rotated_ip=IP,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def parent(ip: str | None = IP) -> Presented:
    return Presented(4, OWNER, None, None, ip)


# The rules under a clock stepped back past the rotation (H-19).


@pytest.mark.parametrize("ip", [IP, "198.51.100.9", None])
def test_h19_negative_elapsed_is_answered_once_and_counted(ip: str | None) -> None:
    """An hour before the rotation by the clock: not "within seconds of it" (no free
    concurrent replay, even from the rotating address), not reuse either."""
    decision = decide(session(), USER, parent(ip), POLICY, ROTATED - HOUR)
    assert isinstance(decision, Replay)
    assert decision.outcome is RefreshOutcome.REPLAYED_LOST_RESPONSE
    assert decision.log == ReplayLog().with_replay(4), "the replay is counted"


def test_h19_negative_elapsed_again_is_refused_not_revoked() -> None:
    """The same parent once more under the stepped clock: refused, the session live.
    Before the fix every presentation for an hour got the live token, free."""
    answered = session(replays=ReplayLog().with_replay(4))
    decision = decide(answered, USER, parent(), POLICY, ROTATED - HOUR)
    assert decision == Refuse(Refusal.CLOCK_STEPPED_BACK)
    assert outcome_of(decision) is RefreshOutcome.CLOCK_STEPPED_BACK


def test_h19_negative_elapsed_without_a_budget_is_held_to_the_default_one() -> None:
    """A client with no budget of its own (and a window) is held to the default budget
    while the clock reads before the rotation: a thief following the session is caught."""
    full = ReplayLog()
    for generation in range(4 - DEFAULT_BUDGET.replays, 4):
        full = full.with_replay(generation)
    unbudgeted = replace(POLICY, replay_budget=NO_LIMIT)
    decision = decide(session(replays=full), USER, parent(), unbudgeted, ROTATED - HOUR)
    assert decision == Revoke(RevocationReason.REPLAY_BUDGET_EXCEEDED)
    # The same state with a true clock, inside the window: no budget, answered.
    inside = decide(
        session(replays=full), USER, parent(), unbudgeted, ROTATED + timedelta(seconds=1)
    )
    assert isinstance(inside, Replay)


def test_h19_negative_elapsed_with_no_time_limit_is_answered_once() -> None:
    """A window with no time limit (FAPI 2.0) does not read the clock to open, but a
    stepped clock still takes away the free concurrent replay and answers once."""
    no_limit = RotationPolicy(retry_window=NO_LIMIT, session_idle_ttl=IDLE)
    first = decide(session(), USER, parent(), no_limit, ROTATED - HOUR)
    assert isinstance(first, Replay)
    assert first.outcome is RefreshOutcome.REPLAYED_LOST_RESPONSE
    again = decide(session(replays=first.log), USER, parent(), no_limit, ROTATED - HOUR)
    assert again == Refuse(Refusal.CLOCK_STEPPED_BACK)


def test_h19_within_the_tolerance_two_readings_are_one_instant() -> None:
    """Two processes reading one clock without a round trip disagree by milliseconds:
    a replay that reads a little before the rotation is still concurrent and free."""
    just_before = ROTATED - CLOCK_TOLERANCE + timedelta(milliseconds=1)
    decision = decide(session(), USER, parent(), POLICY, just_before)
    assert isinstance(decision, Replay)
    assert decision.outcome is RefreshOutcome.REPLAYED_CONCURRENT
    assert decision.log == ReplayLog(), "free: nothing counted"


def test_h19_negative_elapsed_is_not_reuse_at_login() -> None:
    """`previous_refresh_token` at login uses the same rule: the parent under a clock
    stepped back is not proof of reuse (the older session is superseded, not reuse)."""
    assert not is_reuse(session(), 4, POLICY, ROTATED - HOUR)
    assert is_reuse(session(), 4, POLICY, ROTATED + timedelta(seconds=WINDOW + 1))


def test_h19_with_replay_off_an_older_token_is_reuse_whatever_the_clock() -> None:
    off = RotationPolicy(retry_window=0, session_idle_ttl=IDLE)
    assert decide(session(), USER, parent(), off, ROTATED - HOUR) == Revoke(
        RevocationReason.REUSE_OUTSIDE_WINDOW
    )


def test_h19_a_budget_of_its_own_is_kept_under_a_stepped_clock() -> None:
    tight = replace(POLICY, replay_budget=ReplayBudget(1, 16))
    once = ReplayLog().with_replay(3)
    decision = decide(session(replays=once), USER, parent(), tight, ROTATED - HOUR)
    assert decision == Revoke(RevocationReason.REPLAY_BUDGET_EXCEEDED)


# The clocks.


class Sources:
    """A wall clock and a steady clock the test moves: `wall` may be stepped."""

    def __init__(self) -> None:
        self.wall_offset = T0.timestamp()
        self.steady_now = 1000.0

    def wall(self) -> float:
        return self.steady_now + self.wall_offset

    def steady(self) -> float:
        return self.steady_now

    def run(self, seconds: float) -> None:
        self.steady_now += seconds


def test_h19_host_clock_holds_a_step_back_for_the_hold_then_follows() -> None:
    sources = Sources()
    clock = HostClock(sources.wall, sources.steady)
    before = clock.now()
    sources.wall_offset -= HOUR.total_seconds()
    sources.run(2)
    assert clock.now() == before + timedelta(seconds=2), "the step is held"
    sources.run(STEP_HOLD_SECONDS)
    assert clock.now() == before + timedelta(seconds=2 + STEP_HOLD_SECONDS) - HOUR


def test_h19_host_clock_holds_a_step_forward_for_the_hold_then_follows() -> None:
    sources = Sources()
    clock = HostClock(sources.wall, sources.steady)
    before = clock.now()
    sources.wall_offset += HOUR.total_seconds()
    sources.run(1)
    assert clock.now() == before + timedelta(seconds=1)
    sources.run(STEP_HOLD_SECONDS)
    assert clock.now() == before + timedelta(seconds=1 + STEP_HOLD_SECONDS) + HOUR


def test_h19_host_clock_follows_slewing_and_a_step_undone() -> None:
    sources = Sources()
    clock = HostClock(sources.wall, sources.steady)
    for _ in range(10):  # NTP slews 0.5 ms/s: followed as it goes
        sources.wall_offset += 0.0005
        sources.run(1)
        assert clock.now().timestamp() == pytest.approx(sources.wall())
    sources.wall_offset += 30
    sources.run(1)
    held = clock.now()
    assert held.timestamp() == pytest.approx(sources.wall() - 30)
    sources.wall_offset -= 30  # stepped back where it was: nothing held any more
    sources.run(1)
    assert clock.now().timestamp() == pytest.approx(sources.wall())


def test_h18_database_clock_reads_the_database_time_plus_steady_time() -> None:
    """A host whose wall clock is an hour off reads the database's time."""
    sources = Sources()
    sources.wall_offset += 3 * 3600  # this host's wall clock: way off
    clock = DatabaseClock(HostClock(sources.wall, sources.steady), sources.steady)
    assert clock.now().timestamp() == pytest.approx(sources.wall()), "unsampled: fallback"
    clock.sample(T0, received=sources.steady())
    sources.run(2.5)
    assert clock.now() == T0 + timedelta(seconds=2.5)


def test_h18_database_clock_keeps_the_sample_of_least_delay() -> None:
    """A sample stamped late (a busy event loop) reads behind: it is not taken while a
    better one is fresh, so the clock neither goes back nor loses the time."""
    sources = Sources()
    clock = DatabaseClock(HostClock(sources.wall, sources.steady), sources.steady)
    clock.sample(T0, sources.steady())
    sources.run(1)
    clock.sample(T0 + timedelta(milliseconds=950), sources.steady())  # stamped 50 ms late
    assert clock.now() == T0 + timedelta(seconds=1)
    clock.sample(T0 + timedelta(milliseconds=1004), sources.steady())  # the database ahead
    assert clock.now() == T0 + timedelta(milliseconds=1004)


def test_h18_database_clock_follows_a_step_of_the_database_clock() -> None:
    """A later sample reading earlier is taken once the anchor is old: the database's
    clock was stepped back (the rules guard against what that does)."""
    sources = Sources()
    clock = DatabaseClock(HostClock(sources.wall, sources.steady), sources.steady)
    clock.sample(T0, sources.steady())
    sources.run(RESAMPLE_SECONDS + 1)
    clock.sample(T0 - HOUR, sources.steady())
    assert clock.now() == T0 - HOUR
    clock.sample(T0 - HOUR - timedelta(milliseconds=5), sources.steady())
    sources.run(0.001)
    assert clock.now() == T0 - HOUR + timedelta(milliseconds=1), "a fresh anchor is kept"


def test_h19_steady_time_is_moved_by_no_step_of_the_monotonic_clock() -> None:
    """A preloaded time library moves the monotonic clock with the wall clock; the tick
    counter it does not reach keeps the steady time steady."""
    fine = [500.0]
    coarse = [80.0]
    steady = SteadyTime(lambda: fine[0], lambda: coarse[0])
    start = steady()
    fine[0] += 1.0
    coarse[0] += 1.0
    assert steady() - start == pytest.approx(1.0)
    fine[0] -= 3600  # the monotonic clock stepped back an hour
    coarse[0] += 1.0
    assert steady() - start == pytest.approx(2.0)


def test_h18_deployment_clock_is_the_database_one_on_postgres_only() -> None:
    class WithClock:
        clock = DatabaseClock()

    assert deployment_clock(WithClock()) is WithClock.clock
    assert isinstance(deployment_clock(object()), HostClock)
