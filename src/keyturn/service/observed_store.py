"""A `Store` that tells observers what it committed: rotations, revocations, security
events. One decorator, so every path that ends a session is seen, however it got there
(logout, reuse, a second use of a code, an administrator, a password change, a disabled
user or client); the use cases do not have to remember to announce anything.

Observers run after the store's operation returned, and must not fail it: an observer
that raises is logged and ignored (the operation has committed; its caller must see
that, not an announcement's trouble).
"""

from __future__ import annotations

import logging
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
    Rotated,
    RotationAttempt,
    Session,
    StoredKey,
    User,
)
from keyturn.core.policy import ReplayLog, RotationSettings
from keyturn.core.ports import Store

log = logging.getLogger("keyturn.observe")


class StoreObserver(Protocol):
    async def rotated(self, session_id: SessionId) -> None:
        """A rotation committed (the compare-and-swap won)."""
        ...

    async def revoked(
        self, ended: Sequence[EndedSession], reason: RevocationReason, at: datetime
    ) -> None:
        """These sessions were revoked, committed."""
        ...

    async def recorded(self, event: SecurityEvent) -> None:
        """This security event was committed to the audit trail."""
        ...


class ObservedStore:
    def __init__(self, store: Store, observers: Sequence[StoreObserver]) -> None:
        self._store = store
        self._observers = tuple(observers)

    async def _rotated(self, session_id: SessionId) -> None:
        for observer in self._observers:
            try:
                await observer.rotated(session_id)
            except Exception:
                log.exception("store observer failed on a rotation")

    async def _revoked(
        self, ended: Sequence[EndedSession], reason: RevocationReason, at: datetime
    ) -> None:
        if not ended:
            return
        for observer in self._observers:
            try:
                await observer.revoked(ended, reason, at)
            except Exception:
                log.exception("store observer failed on a revocation")

    async def _recorded(self, *events: SecurityEvent) -> None:
        for event in events:
            for observer in self._observers:
                try:
                    await observer.recorded(event)
                except Exception:
                    log.exception("store observer failed on an event")

    # Users

    async def add_user(self, user: User, event: SecurityEvent) -> None:
        await self._store.add_user(user, event)
        await self._recorded(event)

    async def get_user(self, user_id: UserId) -> User | None:
        return await self._store.get_user(user_id)

    async def find_user(self, username: str) -> User | None:
        return await self._store.find_user(username)

    async def list_users(self) -> list[User]:
        return await self._store.list_users()

    async def disable_user(
        self, user_id: UserId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        ended = await self._store.disable_user(user_id, at, event)
        await self._recorded(event)
        await self._revoked(ended, RevocationReason.USER_DISABLED, at)
        return ended

    async def change_password(
        self,
        user_id: UserId,
        password_hash: str,
        at: datetime,
        keep: SessionId | None,
        event: SecurityEvent,
    ) -> list[EndedSession]:
        ended = await self._store.change_password(user_id, password_hash, at, keep, event)
        await self._recorded(event)
        await self._revoked(ended, RevocationReason.PASSWORD_CHANGED, at)
        return ended

    # Clients

    async def add_client(self, client: Client, event: SecurityEvent) -> None:
        await self._store.add_client(client, event)
        await self._recorded(event)

    async def get_client(self, client_id: ClientId) -> Client | None:
        return await self._store.get_client(client_id)

    async def list_clients(self) -> list[Client]:
        return await self._store.list_clients()

    async def set_client_rotation(
        self, client_id: ClientId, rotation: RotationSettings, event: SecurityEvent
    ) -> None:
        await self._store.set_client_rotation(client_id, rotation, event)
        await self._recorded(event)

    async def disable_client(
        self, client_id: ClientId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        ended = await self._store.disable_client(client_id, at, event)
        await self._recorded(event)
        await self._revoked(ended, RevocationReason.CLIENT_DISABLED, at)
        return ended

    # Sessions

    async def create_session(self, session: Session, event: SecurityEvent) -> None:
        await self._store.create_session(session, event)
        await self._recorded(event)

    async def get_session(self, session_id: SessionId) -> Session | None:
        return await self._store.get_session(session_id)

    async def get_session_with_user(self, session_id: SessionId) -> tuple[Session, User] | None:
        return await self._store.get_session_with_user(session_id)

    async def get_presentation(self, client_id: ClientId, session_id: SessionId) -> Presentation:
        return await self._store.get_presentation(client_id, session_id)

    async def attempt_rotation(self, attempt: RotationAttempt) -> Attempted:
        attempted = await self._store.attempt_rotation(attempt)
        if type(attempted) is Rotated:
            await self._rotated(attempt.session_id)
        return attempted

    async def advance_generation(
        self,
        session_id: SessionId,
        from_generation: int,
        at: datetime,
        idle_expires_at: datetime,
        ip: str | None = None,
    ) -> bool:
        won = await self._store.advance_generation(
            session_id, from_generation, at, idle_expires_at, ip
        )
        if won:
            await self._rotated(session_id)
        return won

    async def revoke_session(
        self, session_id: SessionId, reason: RevocationReason, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        ended = await self._store.revoke_session(session_id, reason, at, event)
        await self._recorded(event)
        await self._revoked(ended, reason, at)
        return ended

    async def record_replay(
        self, session_id: SessionId, read: ReplayLog, log: ReplayLog, event: SecurityEvent
    ) -> bool:
        recorded = await self._store.record_replay(session_id, read, log, event)
        if recorded:
            await self._recorded(event)
        return recorded

    async def keep_session(
        self, session_id: SessionId, generation: int, at: datetime, idle_expires_at: datetime
    ) -> bool:
        return await self._store.keep_session(session_id, generation, at, idle_expires_at)

    async def revoke_user_sessions(
        self,
        user_id: UserId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
        keep: SessionId | None = None,
    ) -> list[EndedSession]:
        ended = await self._store.revoke_user_sessions(user_id, reason, at, event, keep)
        await self._recorded(event)
        await self._revoked(ended, reason, at)
        return ended

    async def list_sessions(
        self, user_id: UserId | None = None, *, include_revoked: bool = False
    ) -> list[Session]:
        return await self._store.list_sessions(user_id, include_revoked=include_revoked)

    async def list_revoked(self, after: datetime, after_id: str, limit: int) -> list[Session]:
        return await self._store.list_revoked(after, after_id, limit)

    async def purge_expired(
        self,
        now: datetime,
        retention_seconds: int,
        batch_size: int,
        *,
        code_retention_seconds: int | None = None,
        audit_retention_seconds: int | None = None,
    ) -> int:
        return await self._store.purge_expired(
            now,
            retention_seconds,
            batch_size,
            code_retention_seconds=code_retention_seconds,
            audit_retention_seconds=audit_retention_seconds,
        )

    # Authorization codes

    async def add_authorization_code(self, code: AuthorizationCode, event: SecurityEvent) -> None:
        await self._store.add_authorization_code(code, event)
        await self._recorded(event)

    async def get_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        return await self._store.get_authorization_code(code_hash)

    async def redeem_authorization_code(
        self, code_hash: str, at: datetime, session: Session | None, event: SecurityEvent
    ) -> bool:
        redeemed = await self._store.redeem_authorization_code(code_hash, at, session, event)
        if redeemed:
            await self._recorded(event)
        return redeemed

    # Keys

    async def list_keys(self) -> list[StoredKey]:
        return await self._store.list_keys()

    async def save_keys(self, keys: Sequence[StoredKey], events: Sequence[SecurityEvent]) -> None:
        await self._store.save_keys(keys, events)
        await self._recorded(*events)

    async def delete_keys(self, kids: Sequence[KeyId]) -> None:
        await self._store.delete_keys(kids)

    # Audit

    async def record(self, event: SecurityEvent) -> None:
        await self._store.record(event)
        await self._recorded(event)

    async def list_events(
        self, *, type: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[RecordedEvent]:
        return await self._store.list_events(type=type, since=since, limit=limit)

    async def list_session_events(
        self, session_id: SessionId, *, after_id: int | None, limit: int
    ) -> list[RecordedEvent]:
        return await self._store.list_session_events(session_id, after_id=after_id, limit=limit)

    # Connection

    async def ping(self) -> None:
        await self._store.ping()

    async def close(self) -> None:
        await self._store.close()
