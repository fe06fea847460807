"""The rotation decision: what to do with a presented refresh token.

A pure function of the session as read, the user's state, who presents the token and
the clock. It decides; the service persists what it decided, atomically, and only then
mints. The rules are DESIGN.md's, in its order; each branch says why it exists.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import assert_never

from keyturn.core.ids import ClientId
from keyturn.core.models import Client, RevocationReason, RotationAttempt, Session, User
from keyturn.core.policy import DEFAULT_BUDGET, NO_LIMIT, NoLimit, ReplayBudget, ReplayLog
from keyturn.core.scopes import Scope, narrow

CONCURRENT_SECONDS = 5
"""A replay this soon after the rotation it follows is one of several presentations at
once (tabs, a fan-out); later, a client that never received its successor."""

CLOCK_TOLERANCE = timedelta(seconds=1)
"""How far two readings of the deployment's clock may disagree and still be one instant
(two processes, each reading the database's clock without a round trip). A presentation
that reads this much or less before the rotation it follows came at the same moment; one
that reads further before it means the clock was stepped back (H-19): how long ago the
rotation was is then unknown."""


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """A client's rotation policy as the rules apply it (`keyturn.core.policy.resolve`
    makes it from the client's registration and the server's defaults)."""

    retry_window: int | NoLimit
    """How long after a rotation its parent token may be presented again and answered
    with the same successor. 0 turns replay off; `NO_LIMIT` keeps it until the successor
    is itself presented (FAPI 2.0)."""
    session_idle_ttl: int
    """How far a rotation pushes the idle deadline (never past the absolute one)."""
    replay_budget: ReplayBudget | NoLimit = NO_LIMIT
    rotate: bool = True
    """False: a presentation of the live token keeps it (no successor)."""
    same_key_generations: int = 0
    """How many generations back a proof of a bound session's own key is answered with
    the live token (key continuity); 0 turns it off."""

    def __post_init__(self) -> None:
        if isinstance(self.retry_window, int) and self.retry_window < 0:
            raise ValueError("the retry window cannot be negative")
        if self.session_idle_ttl <= 0:
            raise ValueError("the idle lifetime must be positive")
        if self.same_key_generations < 0:
            raise ValueError("same-key generations cannot be negative")


@dataclass(frozen=True, slots=True)
class UserState:
    """What the decision needs to know of the session's user."""

    enabled: bool
    password_changed_at: datetime


@dataclass(frozen=True, slots=True)
class Presented:
    """A refresh token that passed its checksum and MAC, and who presents it."""

    generation: int
    client_id: ClientId
    requested_scope: Scope | None
    key_thumbprint: str | None = None
    """The RFC 7638 thumbprint of the DPoP proof's key, for a request with a valid proof."""
    ip: str | None = None
    """The peer address of the request, if known."""


class Refusal(enum.StrEnum):
    """Why a token is refused while its session is left exactly as it was."""

    FOREIGN_CLIENT = "foreign_client"
    FUTURE_GENERATION = "future_generation"
    SCOPE_TOO_WIDE = "scope_too_wide"
    ALREADY_REVOKED = "already_revoked"
    CLOCK_STEPPED_BACK = "clock_stepped_back"
    """The parent presented again while the clock reads before its rotation, once
    already answered so: how long ago the rotation was is unknown (H-19)."""


class RefreshOutcome(enum.StrEnum):
    """What became of a presentation of a refresh token: a closed set, one per request,
    counted in `keyturn_refresh_outcomes_total`."""

    ROTATED = "rotated"
    KEPT = "kept"
    """Rotation is off for the client: the live token answered and stays live."""
    REPLAYED_CONCURRENT = "replayed_concurrent"
    REPLAYED_LOST_RESPONSE = "replayed_lost_response"
    REPLAYED_SAME_KEY = "replayed_same_key"
    REUSE_OUTSIDE_WINDOW = "reuse_outside_window"
    REUSE_KEY_MISMATCH = "reuse_key_mismatch"
    REPLAY_BUDGET_EXCEEDED = "replay_budget_exceeded"
    IDLE_EXPIRED = "idle_expired"
    ABSOLUTE_EXPIRED = "absolute_expired"
    USER_DISABLED = "user_disabled"
    PASSWORD_CHANGED = "password_changed"
    SESSION_ENDED = "session_ended"
    """The session had already ended (any reason)."""
    FOREIGN_CLIENT = "foreign_client"
    FUTURE_GENERATION = "future_generation"
    SCOPE_TOO_WIDE = "scope_too_wide"
    CLOCK_STEPPED_BACK = "clock_stepped_back"
    """The parent again, under a clock stepped back past its rotation, after one answer."""
    INVALID_TOKEN = "invalid_token"
    """Not a token of ours: prefix, checksum, MAC, unknown session or salt."""


@dataclass(frozen=True, slots=True)
class Rotate:
    """Advance the session from `from_generation` to `from_generation + 1`."""

    from_generation: int
    idle_expires_at: datetime
    scope: Scope
    """The access token's scope; the refresh token keeps the session's (RFC 6749 §6)."""

    @property
    def to_generation(self) -> int:
        return self.from_generation + 1


@dataclass(frozen=True, slots=True)
class Keep:
    """Rotation is off: answer with the live token of `generation` again and push the
    idle deadline, if the session is still at `generation`."""

    generation: int
    idle_expires_at: datetime
    scope: Scope


@dataclass(frozen=True, slots=True)
class Replay:
    """Answer with the live token of `generation` again, re-derived; record the replay
    and the session's replay log as `log` if the log is still as read."""

    generation: int
    scope: Scope
    outcome: RefreshOutcome
    log: ReplayLog


@dataclass(frozen=True, slots=True)
class Refuse:
    """`invalid_grant` (or `invalid_scope`) with no state change."""

    why: Refusal


@dataclass(frozen=True, slots=True)
class Revoke:
    """End the session, commit that, then answer `invalid_grant`."""

    reason: RevocationReason


Decision = Rotate | Keep | Replay | Refuse | Revoke


def decide(
    session: Session,
    user: UserState,
    presented: Presented,
    policy: RotationPolicy,
    now: datetime,
) -> Decision:
    """Decide what a presentation of a refresh token of `session` does.

    Rule 1 (checksum, MAC, unknown session) is settled before this is called: the
    caller has a `Session` only for a token whose MAC verified.
    """
    # Rule 2. A valid token presented by another client is refused and nothing else:
    # revoking here would let any client end someone else's session with a replay.
    if presented.client_id != session.client_id:
        return Refuse(Refusal.FOREIGN_CLIENT)

    # Rule 3. A dead session stays dead; a session that should be dead is made so.
    if session.revoked:
        return Refuse(Refusal.ALREADY_REVOKED)
    if now >= session.absolute_expires_at:
        return Revoke(RevocationReason.ABSOLUTE_EXPIRED)
    if now >= session.idle_expires_at:
        return Revoke(RevocationReason.IDLE_EXPIRED)
    if not user.enabled:
        return Revoke(RevocationReason.USER_DISABLED)
    if user.password_changed_at > session.auth_time:
        return Revoke(RevocationReason.PASSWORD_CHANGED)

    current = session.generation
    p = presented.generation

    # Rule 5, last branch. A generation the session never reached was not issued by
    # us for this session: forged with a leaked key, or from a restored backup. It is
    # not proof that the session is stolen, so it is refused and alerted, not revoked.
    if p > current:
        return Refuse(Refusal.FUTURE_GENERATION)

    # RFC 9449 §5: a bound refresh token is usable only with a proof of its key. One
    # presented without a proof, or with another key, is in a thief's hands: whatever
    # its generation, the session ends.
    if session.dpop_jkt is not None and presented.key_thumbprint != session.dpop_jkt:
        return Revoke(RevocationReason.REUSE_KEY_MISMATCH)

    scope = narrow(session.scope, presented.requested_scope)
    if p < current:
        return _older(session, p, scope, presented.ip, policy, now)

    # Rule 6. The scope is checked before anything is consumed, so an over-wide
    # request leaves the token live and the next good request is not mistaken for reuse.
    if scope is None:
        return Refuse(Refusal.SCOPE_TOO_WIDE)
    idle = min(now + timedelta(seconds=policy.session_idle_ttl), session.absolute_expires_at)
    if not policy.rotate:
        return Keep(generation=current, idle_expires_at=idle, scope=scope)
    return Rotate(from_generation=current, idle_expires_at=idle, scope=scope)


def _older(
    session: Session,
    p: int,
    scope: Scope | None,
    presented_ip: str | None,
    policy: RotationPolicy,
    now: datetime,
) -> Decision:
    """Rule 5: a token older than the live one."""
    current = session.generation
    # Key continuity: the session's own key proves the same device, retrying with a
    # stale copy (a lost response, another process of it). A thief with the copied
    # token alone cannot make this proof; see docs/rotation-policies.md.
    if session.dpop_jkt is not None and current - p <= policy.same_key_generations:
        if scope is None:
            return Refuse(Refusal.SCOPE_TOO_WIDE)
        return Replay(current, scope, RefreshOutcome.REPLAYED_SAME_KEY, session.replays)
    if is_reuse(session, p, policy, now):
        return Revoke(RevocationReason.REUSE_OUTSIDE_WINDOW)
    if scope is None:
        return Refuse(Refusal.SCOPE_TOO_WIDE)
    rotated_at = session.rotated_at or now  # never None here: is_reuse would have held
    stepped_back = _stepped_back(rotated_at, now)
    soon = not stepped_back and now - rotated_at <= timedelta(seconds=CONCURRENT_SECONDS)
    if soon and presented_ip is not None and presented_ip == session.rotated_ip:
        # Tabs, a server-side fan-out, processes of one agent: the same device presents
        # the parent within seconds of its own rotation, from the address that rotated.
        # It spends no budget; a thief would have to present from that address, and
        # within seconds of a rotation he cannot see.
        return Replay(current, scope, RefreshOutcome.REPLAYED_CONCURRENT, session.replays)
    # A thief who follows a session must replay on nearly every rotation, because the
    # real client and the thief hold one live token between them; a device that loses
    # a response replays on a few. Past the budget, the replays are the thief's.
    log = session.replays.with_replay(p)
    budget = policy.replay_budget
    if stepped_back:
        # H-19. The clock reads before the rotation: it cannot tell a retry a second
        # after a step back from a replay an hour late. The parent is answered once,
        # counted; presented again it is refused, the session left live. A client
        # without a budget of its own is held to the default one meanwhile.
        if log == session.replays:
            return Refuse(Refusal.CLOCK_STEPPED_BACK)
        if not isinstance(budget, ReplayBudget):
            budget = DEFAULT_BUDGET
    if isinstance(budget, ReplayBudget) and log.count(current, budget.of) > budget.replays:
        return Revoke(RevocationReason.REPLAY_BUDGET_EXCEEDED)
    outcome = RefreshOutcome.REPLAYED_CONCURRENT if soon else RefreshOutcome.REPLAYED_LOST_RESPONSE
    return Replay(current, scope, outcome, log)


def outcome_of(decision: Decision) -> RefreshOutcome:
    """The outcome a decision answers with (what the request became, once committed)."""
    match decision:
        case Rotate():
            return RefreshOutcome.ROTATED
        case Keep():
            return RefreshOutcome.KEPT
        case Replay(outcome=outcome):
            return outcome
        case Revoke(reason=reason):
            return RefreshOutcome(reason.value)
        case Refuse(why=why):
            return _REFUSALS[why]
        case _:
            assert_never(decision)


_REFUSALS = {
    Refusal.FOREIGN_CLIENT: RefreshOutcome.FOREIGN_CLIENT,
    Refusal.FUTURE_GENERATION: RefreshOutcome.FUTURE_GENERATION,
    Refusal.SCOPE_TOO_WIDE: RefreshOutcome.SCOPE_TOO_WIDE,
    Refusal.ALREADY_REVOKED: RefreshOutcome.SESSION_ENDED,
    Refusal.CLOCK_STEPPED_BACK: RefreshOutcome.CLOCK_STEPPED_BACK,
}


def is_reuse(session: Session, generation: int, policy: RotationPolicy, now: datetime) -> bool:
    """Whether presenting the token of `generation` now is reuse of a rotated-out token.

    Rule 5. N open tabs refresh at once, or a response was lost and the client
    retries: the parent of the live token, within the retry window, gets the live
    token again. Every other older token is a stolen token in use. The window closes
    for good once the successor is itself rotated: the parent is then two behind.
    """
    if generation >= session.generation:
        return False
    return not (generation == session.generation - 1 and _within_window(session, policy, now))


def _within_window(session: Session, policy: RotationPolicy, now: datetime) -> bool:
    """Whether the window after the rotation may still be open: surely inside it, or,
    with the clock stepped back past the rotation, not known to be outside it."""
    if session.rotated_at is None:
        return False
    if isinstance(policy.retry_window, NoLimit):
        return True
    if policy.retry_window == 0:
        return False
    # H-19: a clock stepped back makes `now - rotated_at` negative, which is no time
    # inside the window. It is not proof of a late replay either (a retry a second after
    # the step reads the same), so it is left to `_older`, which answers it once and
    # counts it: never free, never an hour of answers, never a session ended for it.
    return now - session.rotated_at <= timedelta(seconds=policy.retry_window)


def _stepped_back(rotated_at: datetime, now: datetime) -> bool:
    """Whether `now` reads further before `rotated_at` than two readings of one clock
    can disagree: the clock was stepped back since the rotation."""
    return now - rotated_at < -CLOCK_TOLERANCE


def attempt_holds(
    attempt: RotationAttempt, client: Client | None, session: Session | None, user: User | None
) -> bool:
    """Whether a store may commit `attempt` on what it read: exactly when the rules,
    shown that presentation, would `Rotate` it from `attempt.generation`.

    This is the guard every store's `attempt_rotation` writes (as SQL in the SQLite and
    PostgreSQL adapters); the rules decide it here, through `decide`, and a property
    test holds each adapter to this function on every kind of state. What it adds to
    `decide` is what the service checks before deciding: the token's salt is the
    session's, and the client is the enabled one the caller authenticated.
    """
    if client is None or session is None or user is None:
        return False
    if not client.enabled or client.secret_hash != attempt.client_secret_hash:
        return False
    if session.salt != attempt.salt or session.user_id != user.id:
        return False
    decision = decide(
        session,
        UserState(enabled=user.enabled, password_changed_at=user.password_changed_at),
        Presented(attempt.generation, attempt.client_id, None),
        # The retry window only matters for an older generation, never to a rotation.
        # No key is presented: a session bound to a DPoP key never takes this path.
        RotationPolicy(retry_window=0, session_idle_ttl=attempt.idle_ttl),
        attempt.at,
    )
    return isinstance(decision, Rotate) and decision.from_generation == attempt.generation


def attempted_session(attempt: RotationAttempt, session: Session) -> Session:
    """`session` as a successful `attempt` leaves it."""
    return replace(
        session,
        generation=attempt.generation + 1,
        rotated_at=attempt.at,
        rotated_ip=attempt.ip,
        last_used_at=attempt.at,
        idle_expires_at=min(
            attempt.at + timedelta(seconds=attempt.idle_ttl), session.absolute_expires_at
        ),
    )
