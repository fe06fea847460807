"""The in-memory store: the `Store` port in a process's memory, for fast unit tests of
the use cases. Same semantics as the SQLite and PostgreSQL stores (the contract suite
runs on all three); one lock makes every operation atomic."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from keyturn.core.audit import RecordedEvent, SecurityEvent
from keyturn.core.errors import AlreadyExists, NotFound
from keyturn.core.ids import ClientId, KeyId, SessionId, UserId
from keyturn.core.models import (
    Attempted,
    AuthorizationCode,
    Client,
    EndedSession,
    NotRotated,
    Presentation,
    RevocationReason,
    Rotated,
    RotationAttempt,
    Session,
    StoredKey,
    User,
)
from keyturn.core.policy import ReplayLog, RotationSettings
from keyturn.core.rotation import attempt_holds, attempted_session


class MemoryStore:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._users: dict[UserId, User] = {}
        self._clients: dict[ClientId, Client] = {}
        self._sessions: dict[SessionId, Session] = {}
        self._keys: dict[KeyId, StoredKey] = {}
        self._codes: dict[str, AuthorizationCode] = {}
        self._events: list[RecordedEvent] = []
        self._event_ids = itertools.count(1)  # never reused, even after a purge

    def _record(self, event: SecurityEvent) -> None:
        self._events.append(RecordedEvent(id=next(self._event_ids), event=event))

    def _revoke_where(
        self, match: object, reason: RevocationReason, at: datetime, keep: SessionId | None
    ) -> list[EndedSession]:
        ended: list[EndedSession] = []
        for sid, session in self._sessions.items():
            if session.revoked or sid == keep:
                continue
            if match in (session.user_id, session.client_id):
                self._sessions[sid] = replace(session, revoked_at=at, revoked_reason=reason)
                ended.append(EndedSession(sid, session.client_id))
        return ended

    # Users

    async def add_user(self, user: User, event: SecurityEvent) -> None:
        async with self._lock:
            if any(u.username == user.username for u in self._users.values()):
                raise AlreadyExists(f"A user named {user.username!r} exists.")
            self._users[user.id] = user
            self._record(event)

    async def get_user(self, user_id: UserId) -> User | None:
        return self._users.get(user_id)

    async def find_user(self, username: str) -> User | None:
        return next((u for u in self._users.values() if u.username == username), None)

    async def list_users(self) -> list[User]:
        return sorted(self._users.values(), key=lambda u: u.username)

    async def disable_user(
        self, user_id: UserId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        async with self._lock:
            user = self._users.get(user_id)
            if user is None:
                raise NotFound("No such user.")
            self._users[user_id] = replace(user, enabled=False)
            ended = self._revoke_where(user_id, RevocationReason.USER_DISABLED, at, None)
            self._record(event)
            return ended

    async def change_password(
        self,
        user_id: UserId,
        password_hash: str,
        at: datetime,
        keep: SessionId | None,
        event: SecurityEvent,
    ) -> list[EndedSession]:
        async with self._lock:
            user = self._users.get(user_id)
            if user is None:
                raise NotFound("No such user.")
            self._users[user_id] = replace(
                user, password_hash=password_hash, password_changed_at=at
            )
            kept = self._sessions.get(keep) if keep is not None else None
            if kept is not None and kept.user_id == user_id:
                self._sessions[kept.id] = replace(kept, authenticated_at=at)
            ended = self._revoke_where(user_id, RevocationReason.PASSWORD_CHANGED, at, keep)
            self._record(event)
            return ended

    # Clients

    async def add_client(self, client: Client, event: SecurityEvent) -> None:
        async with self._lock:
            if client.id in self._clients:
                raise AlreadyExists(f"A client {client.id!r} exists.")
            self._clients[client.id] = client
            self._record(event)

    async def get_client(self, client_id: ClientId) -> Client | None:
        return self._clients.get(client_id)

    async def list_clients(self) -> list[Client]:
        return sorted(self._clients.values(), key=lambda c: c.id)

    async def set_client_rotation(
        self, client_id: ClientId, rotation: RotationSettings, event: SecurityEvent
    ) -> None:
        async with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                raise NotFound("No such client.")
            self._clients[client_id] = replace(client, rotation=rotation)
            self._record(event)

    async def disable_client(
        self, client_id: ClientId, at: datetime, event: SecurityEvent
    ) -> list[EndedSession]:
        async with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                raise NotFound("No such client.")
            self._clients[client_id] = replace(client, enabled=False)
            ended = self._revoke_where(client_id, RevocationReason.CLIENT_DISABLED, at, None)
            self._record(event)
            return ended

    # Sessions

    async def create_session(self, session: Session, event: SecurityEvent) -> None:
        async with self._lock:
            if session.id in self._sessions:
                raise AlreadyExists("A session with this id exists.")
            self._sessions[session.id] = session
            self._record(event)

    async def get_session(self, session_id: SessionId) -> Session | None:
        return self._sessions.get(session_id)

    async def get_session_with_user(self, session_id: SessionId) -> tuple[Session, User] | None:
        session = self._sessions.get(session_id)
        user = self._users.get(session.user_id) if session is not None else None
        return (session, user) if session is not None and user is not None else None

    async def get_presentation(self, client_id: ClientId, session_id: SessionId) -> Presentation:
        client = self._clients.get(client_id)
        if client is None:
            return Presentation(client=None)
        loaded = await self.get_session_with_user(session_id)
        return Presentation(client, *loaded) if loaded else Presentation(client)

    async def attempt_rotation(self, attempt: RotationAttempt) -> Attempted:
        async with self._lock:
            read = await self.get_presentation(attempt.client_id, attempt.session_id)
            if not attempt_holds(attempt, read.client, read.session, read.user):
                return NotRotated(read)
            assert read.session is not None  # noqa: S101 - attempt_holds saw it
            rotated = attempted_session(attempt, read.session)
            self._sessions[attempt.session_id] = rotated
            return Rotated(rotated)

    async def advance_generation(
        self,
        session_id: SessionId,
        from_generation: int,
        at: datetime,
        idle_expires_at: datetime,
        ip: str | None = None,
    ) -> bool:
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.revoked or session.generation != from_generation:
                return False
            self._sessions[session_id] = replace(
                session,
                generation=from_generation + 1,
                rotated_at=at,
                rotated_ip=ip,
                last_used_at=at,
                idle_expires_at=idle_expires_at,
            )
            return True

    async def record_replay(
        self, session_id: SessionId, read: ReplayLog, log: ReplayLog, event: SecurityEvent
    ) -> bool:
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.revoked or session.replays != read:
                return False
            self._sessions[session_id] = replace(session, replays=log)
            self._record(event)
            return True

    async def keep_session(
        self, session_id: SessionId, generation: int, at: datetime, idle_expires_at: datetime
    ) -> bool:
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.revoked or session.generation != generation:
                return False
            self._sessions[session_id] = replace(
                session, last_used_at=at, idle_expires_at=idle_expires_at
            )
            return True

    async def revoke_session(
        self,
        session_id: SessionId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
    ) -> list[EndedSession]:
        async with self._lock:
            self._record(event)
            session = self._sessions.get(session_id)
            if session is None or session.revoked:
                return []
            self._sessions[session_id] = replace(session, revoked_at=at, revoked_reason=reason)
            return [EndedSession(session_id, session.client_id)]

    async def revoke_user_sessions(
        self,
        user_id: UserId,
        reason: RevocationReason,
        at: datetime,
        event: SecurityEvent,
        keep: SessionId | None = None,
    ) -> list[EndedSession]:
        async with self._lock:
            ended = self._revoke_where(user_id, reason, at, keep)
            self._record(event)
            return ended

    async def list_sessions(
        self, user_id: UserId | None = None, *, include_revoked: bool = False
    ) -> list[Session]:
        found = [
            s
            for s in self._sessions.values()
            if (user_id is None or s.user_id == user_id) and (include_revoked or not s.revoked)
        ]
        return sorted(found, key=lambda s: (s.created_at, s.id), reverse=True)

    async def list_revoked(self, after: datetime, after_id: str, limit: int) -> list[Session]:
        revoked = [
            s
            for s in self._sessions.values()
            if s.revoked_at is not None and (s.revoked_at, s.id) > (after, after_id)
        ]
        return sorted(revoked, key=lambda s: (s.revoked_at or after, s.id))[:limit]

    async def purge_expired(
        self,
        now: datetime,
        retention_seconds: int,
        batch_size: int,
        *,
        code_retention_seconds: int | None = None,
        audit_retention_seconds: int | None = None,
    ) -> int:
        cutoff = now - timedelta(seconds=retention_seconds)
        codes_kept = retention_seconds if code_retention_seconds is None else code_retention_seconds
        code_cutoff = now - timedelta(seconds=codes_kept)
        async with self._lock:
            doomed = [
                sid
                for sid, s in self._sessions.items()
                if (s.revoked_at is not None and s.revoked_at < cutoff)
                or s.idle_expires_at < cutoff
                or s.absolute_expires_at < cutoff
            ][:batch_size]
            for sid in doomed:
                del self._sessions[sid]
            stale = [h for h, c in self._codes.items() if c.expires_at < code_cutoff]
            for code_hash in stale[:batch_size]:
                del self._codes[code_hash]
            old: set[int] = set()
            if audit_retention_seconds is not None:
                audit_cutoff = now - timedelta(seconds=audit_retention_seconds)
                old = {e.id for e in self._events if e.event.at < audit_cutoff}
                old = set(sorted(old)[:batch_size])
                self._events = [e for e in self._events if e.id not in old]
            return len(doomed) + len(stale[:batch_size]) + len(old)

    # Authorization codes

    async def add_authorization_code(self, code: AuthorizationCode, event: SecurityEvent) -> None:
        async with self._lock:
            if code.code_hash in self._codes:
                raise AlreadyExists("This authorization code exists.")
            self._codes[code.code_hash] = code
            self._record(event)

    async def get_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        return self._codes.get(code_hash)

    async def redeem_authorization_code(
        self, code_hash: str, at: datetime, session: Session | None, event: SecurityEvent
    ) -> bool:
        async with self._lock:
            code = self._codes.get(code_hash)
            if code is None or code.used:
                return False
            if session is not None and session.id in self._sessions:
                raise AlreadyExists("A session with this id exists.")
            self._codes[code_hash] = replace(
                code, used_at=at, session_id=session.id if session else None
            )
            if session is not None:
                self._sessions[session.id] = session
            self._record(event)
            return True

    # Keys

    async def list_keys(self) -> list[StoredKey]:
        return sorted(self._keys.values(), key=lambda k: (k.created_at, k.kid))

    async def save_keys(self, keys: Sequence[StoredKey], events: Sequence[SecurityEvent]) -> None:
        async with self._lock:
            for key in keys:
                self._keys[key.kid] = key
            for event in events:
                self._record(event)

    async def delete_keys(self, kids: Sequence[KeyId]) -> None:
        async with self._lock:
            for kid in kids:
                self._keys.pop(kid, None)

    # Audit

    async def record(self, event: SecurityEvent) -> None:
        async with self._lock:
            self._record(event)

    async def list_events(
        self,
        *,
        type: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[RecordedEvent]:
        found = [
            e
            for e in self._events
            if (type is None or e.event.type.value == type)
            and (since is None or e.event.at >= since)
        ]
        return found[:limit]

    async def list_session_events(
        self, session_id: SessionId, *, after_id: int | None, limit: int
    ) -> list[RecordedEvent]:
        start = after_id or 0
        found = [e for e in self._events if e.event.session_id == session_id and e.id > start]
        return found[:limit]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
