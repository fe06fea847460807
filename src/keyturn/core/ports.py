"""The ports: what the rules need from the world, as protocols.

Every store operation is atomic on its own: it commits all it writes or nothing, so a
caller never holds a transaction open across its own work (no signing, hashing or
network I/O under a lock). Operations that must be committed together are one
operation here, never two. A store that cannot reach its database, or is not answered
in time, raises `StoreUnavailable`; it never returns a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from keyturn.core.audit import RecordedEvent, SecurityEvent
from keyturn.core.ids import ClientId, KeyId, SessionId, UserId
from keyturn.core.models import (
    Attempted,
    AuthorizationCode,
    Client,
    EndedSession,
    Presentation,
    RevocationReason,
    RotationAttempt,
    Session,
    StoredKey,
    User,
)
from keyturn.core.policy import ReplayLog, RotationSettings


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC: the deployment's one clock, which every
        rule and every stored time reads (on PostgreSQL the database's, whatever each
        host's own says; docs/decisions/one-clock.md)."""
        ...


class Randomness(Protocol):
    def token_bytes(self, n: int) -> bytes:
        """`n` bytes from a CSPRNG."""
        ...


class UserStore(Protocol):
    async def add_user(self, user: User, event: SecurityEvent) -> None:
        """Insert `user` and record `event`. `AlreadyExists` if the username is taken."""
        ...

    async def get_user(self, user_id: UserId) -> User | None: ...

    async def find_user(self, username: str) -> User | None: ...

    async def list_users(self) -> list[User]: ...

    async def disable_user(
        self, user_id: UserId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        """Disable the user and revoke every live session of theirs (reason
        `user_disabled`), recording `event`, in one transaction. Returns the sessions
        it revoked. `NotFound` if there is no such user."""
        ...

    async def change_password(
        self,
        user_id: UserId,
        password_hash: str,
        at: datetime,
        keep: SessionId | None,
        event: SecurityEvent,
    ) -> list[EndedSession]:
        """Set the password hash and `password_changed_at = at`, set `keep`'s
        `authenticated_at = at` (it proved the password), revoke every other live
        session of the user (reason `password_changed`), and record `event`, in one
        transaction. Returns the sessions it revoked."""
        ...


class ClientStore(Protocol):
    async def add_client(self, client: Client, event: SecurityEvent) -> None:
        """Insert `client` and record `event`. `AlreadyExists` if the id is taken."""
        ...

    async def get_client(self, client_id: ClientId) -> Client | None: ...

    async def list_clients(self) -> list[Client]: ...

    async def set_client_rotation(
        self, client_id: ClientId, rotation: RotationSettings, event: SecurityEvent
    ) -> None:
        """Set the client's rotation policy and record `event`, in one transaction.
        `NotFound` if there is no such client."""
        ...

    async def disable_client(
        self, client_id: ClientId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        """Disable the client and revoke its live sessions (reason `client_disabled`),
        recording `event`, in one transaction. `NotFound` if there is no such client."""
        ...


class SessionStore(Protocol):
    async def create_session(self, session: Session, event: SecurityEvent) -> None:
        """Insert a new session (generation 0) and record `event`, in one transaction."""
        ...

    async def get_session(self, session_id: SessionId) -> Session | None:
        """The session as last committed, revoked or not; `None` if unknown."""
        ...

    async def get_session_with_user(self, session_id: SessionId) -> tuple[Session, User] | None:
        """The session and its user, read together (one round trip on the hot path of
        every rotation); `None` if the session is unknown."""
        ...

    async def advance_generation(
        self,
        session_id: SessionId,
        from_generation: int,
        at: datetime,
        idle_expires_at: datetime,
        ip: str | None = None,
    ) -> bool:
        """Compare-and-swap the rotation: if the session is live and at
        `from_generation`, set `generation = from_generation + 1`, `rotated_at = at`,
        `rotated_ip = ip`, `last_used_at = at` and `idle_expires_at`, and commit. Returns False (and
        changes nothing) if another rotation or a revocation got there first."""
        ...

    async def revoke_session(
        self,
        session_id: SessionId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
    ) -> list[EndedSession]:
        """Revoke the session if it is live and record `event`, in one transaction that
        commits even though the caller's request will fail. Returns the session if this
        call revoked it, nothing if it was already revoked or unknown (the event is
        recorded either way)."""
        ...

    async def record_replay(
        self, session_id: SessionId, read: ReplayLog, log: ReplayLog, event: SecurityEvent
    ) -> bool:
        """A replay answered: if the session is live and its replay log is still `read`,
        set it to `log` and record `event`, in one transaction. Returns False, changing
        and recording nothing, if another replay or a revocation got there first (the
        caller reads again and decides again)."""
        ...

    async def keep_session(
        self, session_id: SessionId, generation: int, at: datetime, idle_expires_at: datetime
    ) -> bool:
        """A use of the live token of a client whose tokens do not rotate: if the
        session is live and at `generation`, set `last_used_at = at` and
        `idle_expires_at`, and commit. Returns False (and changes nothing) otherwise."""
        ...

    async def revoke_user_sessions(
        self,
        user_id: UserId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
        keep: SessionId | None = None,
    ) -> list[EndedSession]:
        """Revoke every live session of the user except `keep`, and record `event`, in
        one transaction. Returns the sessions it revoked."""
        ...

    async def list_sessions(
        self, user_id: UserId | None = None, *, include_revoked: bool = False
    ) -> list[Session]:
        """Sessions, newest first; of one user when `user_id` is given."""
        ...

    async def list_revoked(self, after: datetime, after_id: str, limit: int) -> list[Session]:
        """Revoked sessions in `(revoked_at, id)` order, those after `(after, after_id)`
        only, at most `limit`: the revocation feed's page."""
        ...

    async def purge_expired(
        self,
        now: datetime,
        retention_seconds: int,
        batch_size: int,
        *,
        code_retention_seconds: int | None = None,
        audit_retention_seconds: int | None = None,
    ) -> int:
        """Delete, in one short transaction, at most `batch_size` of each: sessions that
        ended (revoked, or past a deadline) more than `retention_seconds` before `now`;
        authorization codes, used or not, that expired more than
        `code_retention_seconds` before it (None: `retention_seconds`); audit rows older
        than `audit_retention_seconds` (None: none). Returns how many rows it deleted;
        the caller repeats while that reaches `batch_size`."""
        ...


class AuthorizationCodeStore(Protocol):
    async def add_authorization_code(self, code: AuthorizationCode, event: SecurityEvent) -> None:
        """Insert an unused code and record `event`, in one transaction."""
        ...

    async def get_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        """The code as last committed, used or not; `None` if unknown."""
        ...

    async def redeem_authorization_code(
        self, code_hash: str, at: datetime, session: Session | None, event: SecurityEvent
    ) -> bool:
        """Use the code once: if it is unused, set `used_at = at` and `session_id`, insert
        `session` (when given; `None` only burns the code), and record `event`, in one
        transaction. Returns False, changing nothing, if the code is unknown or was
        used already: of any number of concurrent redemptions, exactly one wins."""
        ...


class KeyStore(Protocol):
    async def list_keys(self) -> list[StoredKey]:
        """Every stored key, any use and state."""
        ...

    async def save_keys(self, keys: Sequence[StoredKey], events: Sequence[SecurityEvent]) -> None:
        """Insert or replace (by `kid`) each key, and record the events, in one
        transaction, so a rotation's state changes are seen all at once."""
        ...

    async def delete_keys(self, kids: Sequence[KeyId]) -> None: ...


class AuditLog(Protocol):
    async def record(self, event: SecurityEvent) -> None: ...

    async def list_events(
        self,
        *,
        type: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[RecordedEvent]:
        """Events, oldest first, optionally of one type and at or after `since`."""
        ...

    async def list_session_events(
        self, session_id: SessionId, *, after_id: int | None, limit: int
    ) -> list[RecordedEvent]:
        """The events of one session, oldest first (by id): those with an id greater
        than `after_id` (all when None), at most `limit` (keyset pagination). A session
        id no store can hold (NUL, a lone surrogate) is a miss, never an error."""
        ...


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        """Count one event for `key` in the current window. Returns None while the
        count is within `limit`, else the seconds until the window ends."""
        ...

    async def peek(self, key: str, limit: int, window_seconds: int) -> int | None:
        """Like `hit` without counting: the seconds to wait if `key` is over `limit`."""
        ...


class Store(
    UserStore, ClientStore, SessionStore, AuthorizationCodeStore, KeyStore, AuditLog, Protocol
):
    """Everything keyturn persists, behind one connection pool."""

    async def get_presentation(self, client_id: ClientId, session_id: SessionId) -> Presentation:
        """The client and the session with its user, read together: one query, the only
        read of a rotation (and one round trip fewer than `get_client` then
        `get_session_with_user`)."""
        ...

    async def attempt_rotation(self, attempt: RotationAttempt) -> Attempted:
        """Read the presentation of `attempt` and, in the same atomic operation, advance
        its session if and only if `keyturn.core.rotation.attempt_holds` is true of what
        was read: the hot path of a rotation in one round trip. When it wrote, it returns
        the session as committed (and no presentation: the caller needs none). When
        nothing was written, it returns the presentation as read; the caller decides on
        it as on `get_presentation`'s, and a rotation it then decides on goes through
        `advance_generation` (the state may have moved since: a concurrent rotation)."""
        ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the database answers a trivial query."""
        ...

    async def close(self) -> None: ...
