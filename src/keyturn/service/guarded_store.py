"""A `Store` that answers, once for every store, for text no store can hold.

PostgreSQL `text` cannot hold NUL and UTF-8 cannot hold a lone surrogate. The edges
refuse such text where it enters (`web.forms`, the client-authentication shape check;
the refresh codec yields only UUIDs), so what reaches this wrapper is an operator's
input or a bug. The rule, by kind of operation, is the one every store answered with
before it was written here once:

- **A lookup by an unstorable key is a miss**, as for a key no row has: `None`, an
  empty list, `False`, `NotFound` for the operations that raise it on an unknown key
  (`disable_user`, `disable_client`, `set_client_rotation`, `change_password`). No
  query is sent. A presentation with such a session id reads the client alone; a
  rotation attempt with such an id writes nothing and answers the presentation.
  `delete_keys` ignores such a kid; a `keep` that is unstorable keeps no session.
- **A write of unstorable text is `InvalidRequest`**, and writes nothing: a user,
  client, session, authorization code, signing key or password hash.
- **A revocation by an unstorable key revokes nothing and still records its event**
  (`revoke_session`, `revoke_user_sessions`), as a revocation of an unknown session
  does.
- **An audit event is never refused for its text**: its text is scrubbed (each NUL and
  lone surrogate becomes U+FFFD), because a revocation is committed with its event and
  a hostile user agent must not be able to stop a session from ending.

Each method validates and hands back the inner store's own coroutine, unawaited: the
wrapper adds a function call per operation, never an `await` layer (the rotation's
`attempt_rotation` is the hot path).
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

from keyturn.core.audit import RecordedEvent, SecurityEvent
from keyturn.core.errors import InvalidRequest, NotFound
from keyturn.core.ids import ClientId, KeyId, SessionId, UserId
from keyturn.core.models import (
    Attempted,
    AuthorizationCode,
    Client,
    Device,
    EndedSession,
    NotRotated,
    Presentation,
    RevocationReason,
    RotationAttempt,
    Session,
    StoredKey,
    User,
)
from keyturn.core.policy import ReplayLog, RotationSettings
from keyturn.core.ports import Store
from keyturn.core.storable import scrubbed, storable

T = TypeVar("T")
Pending: TypeAlias = Coroutine[Any, Any, T]


async def _answer(value: T) -> T:
    return value


async def _refuse(what: str) -> Any:
    raise InvalidRequest(f"The {what} holds a character that cannot be stored.")


async def _not_found(what: str) -> Any:
    raise NotFound(f"No such {what}.")


def _event(event: SecurityEvent) -> SecurityEvent:
    """`event`, its text scrubbed if it holds any a store cannot keep."""
    device = event.device
    texts = (event.user_id, event.client_id, event.session_id, event.reason, event.detail)
    if storable(*texts, device.user_agent, device.ip, device.name):
        return event
    return replace(
        event,
        user_id=scrubbed(event.user_id),
        client_id=scrubbed(event.client_id),
        session_id=scrubbed(event.session_id),
        reason=scrubbed(event.reason),
        detail=scrubbed(event.detail),
        device=Device(
            user_agent=scrubbed(device.user_agent),
            ip=scrubbed(device.ip),
            name=scrubbed(device.name),
        ),
    )


def _session_storable(session: Session) -> bool:
    device = session.device
    return storable(
        session.id,
        session.user_id,
        session.client_id,
        *session.scope,
        device.user_agent,
        device.ip,
        device.name,
        session.dpop_jkt,
        session.rotated_ip,
    )


def _client_storable(client: Client) -> bool:
    return storable(
        client.id,
        client.secret_hash,
        *client.redirect_uris,
        *client.scope,
        *client.audience,
        *client.allowed_origins,
    )


def _code_storable(code: AuthorizationCode) -> bool:
    # The columns an authorization code is stored in (its device's name is not kept).
    return storable(
        code.code_hash,
        code.client_id,
        code.user_id,
        code.redirect_uri,
        code.code_challenge,
        *code.scope,
        code.session_id,
        code.device.user_agent,
        code.device.ip,
    )


class GuardedStore:
    """The store-boundary guard: see the module's docstring for the rule."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # Users

    def add_user(self, user: User, event: SecurityEvent) -> Pending[None]:
        if not storable(user.id, user.username, user.password_hash):
            return _refuse("user")
        return self._store.add_user(user, _event(event))

    def get_user(self, user_id: UserId) -> Pending[User | None]:
        return self._store.get_user(user_id) if storable(user_id) else _answer(None)

    def find_user(self, username: str) -> Pending[User | None]:
        return self._store.find_user(username) if storable(username) else _answer(None)

    def list_users(self) -> Pending[list[User]]:
        return self._store.list_users()

    def disable_user(
        self, user_id: UserId, at: datetime, event: SecurityEvent
    ) -> Pending[list[EndedSession]]:
        if not storable(user_id):
            return _not_found("user")
        return self._store.disable_user(user_id, at, _event(event))

    def change_password(
        self,
        user_id: UserId,
        password_hash: str,
        at: datetime,
        keep: SessionId | None,
        event: SecurityEvent,
    ) -> Pending[list[EndedSession]]:
        if not storable(user_id):
            return _not_found("user")
        if not storable(password_hash):
            return _refuse("password hash")
        kept = keep if storable(keep) else None  # names no session: every session ends
        return self._store.change_password(user_id, password_hash, at, kept, _event(event))

    # Clients

    def add_client(self, client: Client, event: SecurityEvent) -> Pending[None]:
        if not _client_storable(client):
            return _refuse("client")
        return self._store.add_client(client, _event(event))

    def get_client(self, client_id: ClientId) -> Pending[Client | None]:
        return self._store.get_client(client_id) if storable(client_id) else _answer(None)

    def list_clients(self) -> Pending[list[Client]]:
        return self._store.list_clients()

    def set_client_rotation(
        self, client_id: ClientId, rotation: RotationSettings, event: SecurityEvent
    ) -> Pending[None]:
        if not storable(client_id):
            return _not_found("client")
        return self._store.set_client_rotation(client_id, rotation, _event(event))

    def disable_client(
        self, client_id: ClientId, at: datetime, event: SecurityEvent
    ) -> Pending[list[EndedSession]]:
        if not storable(client_id):
            return _not_found("client")
        return self._store.disable_client(client_id, at, _event(event))

    # Sessions

    def create_session(self, session: Session, event: SecurityEvent) -> Pending[None]:
        if not _session_storable(session):
            return _refuse("session")
        return self._store.create_session(session, _event(event))

    def get_session(self, session_id: SessionId) -> Pending[Session | None]:
        return self._store.get_session(session_id) if storable(session_id) else _answer(None)

    def get_session_with_user(self, session_id: SessionId) -> Pending[tuple[Session, User] | None]:
        if not storable(session_id):
            return _answer(None)
        return self._store.get_session_with_user(session_id)

    def get_presentation(self, client_id: ClientId, session_id: SessionId) -> Pending[Presentation]:
        if storable(client_id, session_id):
            return self._store.get_presentation(client_id, session_id)
        return self._client_alone(client_id)

    async def _client_alone(self, client_id: ClientId) -> Presentation:
        """The presentation of a session id no store holds: the client, no session."""
        if not storable(client_id):
            return Presentation(client=None)
        return Presentation(await self._store.get_client(client_id))

    def attempt_rotation(self, attempt: RotationAttempt) -> Pending[Attempted]:
        if storable(attempt.session_id, attempt.client_id):
            return self._store.attempt_rotation(attempt)
        return self._nothing_attempted(attempt.client_id)

    async def _nothing_attempted(self, client_id: ClientId) -> Attempted:
        return NotRotated(await self._client_alone(client_id))

    def advance_generation(
        self,
        session_id: SessionId,
        from_generation: int,
        at: datetime,
        idle_expires_at: datetime,
        ip: str | None = None,
    ) -> Pending[bool]:
        if not storable(session_id):
            return _answer(False)
        return self._store.advance_generation(session_id, from_generation, at, idle_expires_at, ip)

    def revoke_session(
        self, session_id: SessionId, reason: RevocationReason, at: datetime, event: SecurityEvent
    ) -> Pending[list[EndedSession]]:
        if not storable(session_id):
            return self._record_only(event)
        return self._store.revoke_session(session_id, reason, at, _event(event))

    async def _record_only(self, event: SecurityEvent) -> list[EndedSession]:
        """A revocation of what no store holds: nothing ends, the event is recorded."""
        await self._store.record(_event(event))
        return []

    def record_replay(
        self, session_id: SessionId, read: ReplayLog, log: ReplayLog, event: SecurityEvent
    ) -> Pending[bool]:
        if not storable(session_id):
            return _answer(False)
        return self._store.record_replay(session_id, read, log, _event(event))

    def keep_session(
        self, session_id: SessionId, generation: int, at: datetime, idle_expires_at: datetime
    ) -> Pending[bool]:
        if not storable(session_id):
            return _answer(False)
        return self._store.keep_session(session_id, generation, at, idle_expires_at)

    def revoke_user_sessions(
        self,
        user_id: UserId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
        keep: SessionId | None = None,
    ) -> Pending[list[EndedSession]]:
        if not storable(user_id):
            return self._record_only(event)
        kept = keep if storable(keep) else None  # names no session: every session ends
        return self._store.revoke_user_sessions(user_id, reason, at, _event(event), kept)

    def list_sessions(
        self, user_id: UserId | None = None, *, include_revoked: bool = False
    ) -> Pending[list[Session]]:
        if not storable(user_id):
            return _answer([])
        return self._store.list_sessions(user_id, include_revoked=include_revoked)

    def list_revoked(self, after: datetime, after_id: str, limit: int) -> Pending[list[Session]]:
        if not storable(after_id):
            return _answer([])
        return self._store.list_revoked(after, after_id, limit)

    def purge_expired(
        self,
        now: datetime,
        retention_seconds: int,
        batch_size: int,
        *,
        code_retention_seconds: int | None = None,
        audit_retention_seconds: int | None = None,
    ) -> Pending[int]:
        return self._store.purge_expired(
            now,
            retention_seconds,
            batch_size,
            code_retention_seconds=code_retention_seconds,
            audit_retention_seconds=audit_retention_seconds,
        )

    # Authorization codes

    def add_authorization_code(
        self, code: AuthorizationCode, event: SecurityEvent
    ) -> Pending[None]:
        if not _code_storable(code):
            return _refuse("authorization request")
        return self._store.add_authorization_code(code, _event(event))

    def get_authorization_code(self, code_hash: str) -> Pending[AuthorizationCode | None]:
        if not storable(code_hash):
            return _answer(None)
        return self._store.get_authorization_code(code_hash)

    def redeem_authorization_code(
        self, code_hash: str, at: datetime, session: Session | None, event: SecurityEvent
    ) -> Pending[bool]:
        if not storable(code_hash):
            return _answer(False)
        if session is not None and not _session_storable(session):
            return _refuse("session")
        return self._store.redeem_authorization_code(code_hash, at, session, _event(event))

    # Keys

    def list_keys(self) -> Pending[list[StoredKey]]:
        return self._store.list_keys()

    def save_keys(
        self, keys: Sequence[StoredKey], events: Sequence[SecurityEvent]
    ) -> Pending[None]:
        if not all(storable(k.kid, k.alg, k.public_jwk) for k in keys):
            return _refuse("key")
        return self._store.save_keys(keys, [_event(e) for e in events])

    def delete_keys(self, kids: Sequence[KeyId]) -> Pending[None]:
        return self._store.delete_keys([kid for kid in kids if storable(kid)])  # no such key

    # Audit

    def record(self, event: SecurityEvent) -> Pending[None]:
        return self._store.record(_event(event))

    def list_events(
        self, *, type: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> Pending[list[RecordedEvent]]:
        if not storable(type):
            return _answer([])
        return self._store.list_events(type=type, since=since, limit=limit)

    def list_session_events(
        self, session_id: SessionId, *, after_id: int | None, limit: int
    ) -> Pending[list[RecordedEvent]]:
        if not storable(session_id):
            return _answer([])
        return self._store.list_session_events(session_id, after_id=after_id, limit=limit)

    # Connection

    def ping(self) -> Pending[None]:
        return self._store.ping()

    def close(self) -> Pending[None]:
        return self._store.close()
