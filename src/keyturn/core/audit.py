"""Security events: what the audit trail records.

Routine rotations are not events (they would double the write cost of a rotation);
every security-relevant fact is. An event never holds a token, a password or a secret.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime

from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import Device


class EventType(enum.StrEnum):
    LOGIN_SUCCEEDED = "login_succeeded"
    LOGIN_FAILED = "login_failed"
    SESSION_CREATED = "session_created"
    SESSION_REVOKED = "session_revoked"
    REUSE_DETECTED = "reuse_detected"
    """A session ended because a token was in two hands: reuse after the retry window,
    a DPoP key mismatch, the replay budget spent, a replayed authorization code."""
    REFRESH_REPLAYED = "refresh_replayed"
    """A rotated-out refresh token answered with the live one (its reason says why)."""
    FOREIGN_CLIENT_PRESENTED = "foreign_client_presented"
    """A valid refresh token presented by another client than its own (rule 2)."""
    FUTURE_GENERATION_PRESENTED = "future_generation_presented"
    """A token of a generation the session never reached: forged or foreign (rule 5)."""
    PASSWORD_CHANGED = "password_changed"
    USER_CREATED = "user_created"
    USER_DISABLED = "user_disabled"
    CLIENT_CREATED = "client_created"
    CLIENT_DISABLED = "client_disabled"
    CLIENT_UPDATED = "client_updated"
    """A client's registration changed (its rotation policy); the detail says to what."""
    KEY_ROTATED = "key_rotated"
    KEY_CREATED = "key_created"
    CLIENT_AUTHENTICATION_FAILED = "client_authentication_failed"
    """A confidential client presented a wrong secret."""
    AUTHORIZATION_CODE_REFUSED = "authorization_code_refused"
    """An unused authorization code presented wrongly (verifier, client, redirect URI,
    expiry), which burns it."""


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    type: EventType
    at: datetime
    user_id: UserId | None = None
    client_id: ClientId | None = None
    session_id: SessionId | None = None
    generation: int | None = None
    reason: str | None = None
    """Why: a `RevocationReason`, a refusal reason, or a short fact. Never a secret."""
    device: Device = field(default_factory=Device)
    detail: str | None = None
    """Free text for operators: a key id, a username that failed to log in."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as read back from the audit trail."""

    id: int
    event: SecurityEvent


_LIVE_GENERATION = re.compile(r"\blive generation (\d{1,18})\b")


def live_generation_note(generation: int) -> str:
    """How an event's `detail` says the session's live generation when it happened: the
    rotations between two events are told from it (`keyturn sessions explain`)."""
    return f"live generation {generation}"


def live_generation_in(detail: str | None) -> int | None:
    """The live generation an event's `detail` notes (`live_generation_note`), if any."""
    found = _LIVE_GENERATION.search(detail or "")
    return int(found[1]) if found else None
