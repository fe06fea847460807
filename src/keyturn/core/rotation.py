"""The rotation decision: what to do with a presented refresh token.

A pure function of the session as read, the user's state, who presents the token and
the clock. It decides; the service persists what it decided, atomically, and only then
mints. The rules are DESIGN.md's, in its order; each branch says why it exists.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from keyturn.core.ids import ClientId
from keyturn.core.models import Client, RevocationReason, RotationAttempt, Session, User
from keyturn.core.scopes import Scope, narrow


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    grace_seconds: int
    """How long after a rotation its parent token may be presented again without being
    treated as reuse. 0 turns replay off: any older token is reuse."""
    session_idle_ttl: int
    """How far a rotation pushes the idle deadline (never past the absolute one)."""

    def __post_init__(self) -> None:
        if self.grace_seconds < 0:
            raise ValueError("the grace window cannot be negative")
        if self.session_idle_ttl <= 0:
            raise ValueError("the idle lifetime must be positive")


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


class Refusal(enum.StrEnum):
    """Why a token is refused while its session is left exactly as it was."""

    FOREIGN_CLIENT = "foreign_client"
    FUTURE_GENERATION = "future_generation"
    SCOPE_TOO_WIDE = "scope_too_wide"
    ALREADY_REVOKED = "already_revoked"


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
class Replay:
    """Answer with the current token of `generation` again, re-derived; write nothing."""

    generation: int
    scope: Scope


@dataclass(frozen=True, slots=True)
class Refuse:
    """`invalid_grant` (or `invalid_scope`) with no state change."""

    why: Refusal


@dataclass(frozen=True, slots=True)
class Revoke:
    """End the session, commit that, then answer `invalid_grant`."""

    reason: RevocationReason


Decision = Rotate | Replay | Refuse | Revoke


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

    if p < current:
        if is_reuse(session, p, policy, now):
            return Revoke(RevocationReason.REUSE_DETECTED)
        scope = narrow(session.scope, presented.requested_scope)
        if scope is None:
            return Refuse(Refusal.SCOPE_TOO_WIDE)
        return Replay(generation=current, scope=scope)

    # Rule 6. The scope is checked before anything is consumed, so an over-wide
    # request leaves the token live and the next good request is not mistaken for reuse.
    scope = narrow(session.scope, presented.requested_scope)
    if scope is None:
        return Refuse(Refusal.SCOPE_TOO_WIDE)
    idle = min(now + timedelta(seconds=policy.session_idle_ttl), session.absolute_expires_at)
    return Rotate(from_generation=current, idle_expires_at=idle, scope=scope)


def is_reuse(session: Session, generation: int, policy: RotationPolicy, now: datetime) -> bool:
    """Whether presenting the token of `generation` now is reuse of a rotated-out token.

    Rule 5. N open tabs refresh at once, or a response was lost and the client
    retries: the parent of the live token, within the grace window, gets the live
    token again. Every other older token is a stolen token in use.
    """
    if generation >= session.generation:
        return False
    return not (generation == session.generation - 1 and _within_grace(session, policy, now))


def _within_grace(session: Session, policy: RotationPolicy, now: datetime) -> bool:
    if policy.grace_seconds == 0 or session.rotated_at is None:
        return False
    return now - session.rotated_at <= timedelta(seconds=policy.grace_seconds)


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
        # The grace window only matters for an older generation, never to a rotation.
        RotationPolicy(grace_seconds=0, session_idle_ttl=attempt.idle_ttl),
        attempt.at,
    )
    return isinstance(decision, Rotate) and decision.from_generation == attempt.generation


def attempted_session(attempt: RotationAttempt, session: Session) -> Session:
    """`session` as a successful `attempt` leaves it."""
    return replace(
        session,
        generation=attempt.generation + 1,
        rotated_at=attempt.at,
        last_used_at=attempt.at,
        idle_expires_at=min(
            attempt.at + timedelta(seconds=attempt.idle_ttl), session.absolute_expires_at
        ),
    )
