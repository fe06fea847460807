"""Administration: users, clients, keys, the audit trail and purging.

What the `keyturn` command line does, as use cases any other front end could call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from keyturn.core.audit import EventType, RecordedEvent, SecurityEvent
from keyturn.core.errors import InvalidRequest, NotFound
from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import (
    Client,
    ClientType,
    Delivery,
    EndedSession,
    GrantType,
    KeyUse,
    LifetimeOverrides,
    Lifetimes,
    RevocationReason,
    Session,
    StoredKey,
    User,
)
from keyturn.core.policy import RotationSettings
from keyturn.core.ports import Clock, Randomness, Store
from keyturn.core.registration import registration_problem
from keyturn.core.scopes import Scope
from keyturn.crypto.client_secrets import generate_secret, hash_secret
from keyturn.crypto.passwords import MAX_PASSWORD_LENGTH, Passwords, check_new_password
from keyturn.service.sessions import Sessions
from keyturn.service.tokens import Tokens

PURGE_BATCH = 1000
# A used or expired authorization code answers nothing but `invalid_grant` once it has
# expired (`core.codes.replay_ends_session`), so it is deleted soon after: kept a few
# minutes past `expires_at` only so that a host whose clock runs ahead never deletes a
# code another host still accepts.
CODE_RETENTION_SECONDS = 300


@dataclass(frozen=True, slots=True)
class NewClient:
    client: Client
    secret: str | None
    """The confidential client's secret, shown once and never stored."""


class Admin:
    def __init__(
        self,
        store: Store,
        tokens: Tokens,
        passwords: Passwords,
        sessions: Sessions,
        clock: Clock,
        randomness: Randomness,
        purge_retention: int,
        audit_retention: int,
        lifetimes: Lifetimes,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._passwords = passwords
        self._sessions = sessions
        self._clock = clock
        self._random = randomness
        self._retention = purge_retention
        self._audit_retention = audit_retention
        self._lifetimes = lifetimes
        """The server's lifetimes, which a client's own may not exceed."""

    # Users

    async def add_user(self, username: str, password: str) -> User:
        if not username or len(username) > 256 or not username.isprintable():
            raise InvalidRequest("A username is 1 to 256 printable characters.")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidRequest("The password is too long.")
        check_new_password(password, username)
        password_hash = await asyncio.to_thread(self._passwords.hash, password)
        now = self._clock.now()
        user = User(
            id=UserId(str(uuid.UUID(bytes=self._random.token_bytes(16), version=4))),
            username=username,
            password_hash=password_hash,
            enabled=True,
            created_at=now,
            password_changed_at=now,
        )
        await self._store.add_user(
            user, SecurityEvent(type=EventType.USER_CREATED, at=now, user_id=user.id)
        )
        return user

    async def list_users(self) -> list[User]:
        return await self._store.list_users()

    async def user_named(self, username: str) -> User:
        user = await self._store.find_user(username)
        if user is None:
            raise NotFound(f"No user named {username!r}.")
        return user

    async def disable_user(self, username: str) -> list[EndedSession]:
        user = await self.user_named(username)
        now = self._clock.now()
        return await self._store.disable_user(
            user.id,
            now,
            SecurityEvent(
                type=EventType.USER_DISABLED,
                at=now,
                user_id=user.id,
                reason=RevocationReason.USER_DISABLED.value,
            ),
        )

    # Clients

    async def add_client(
        self,
        client_id: str,
        client_type: ClientType,
        *,
        redirect_uris: Iterable[str] = (),
        grant_types: Iterable[GrantType] = (),
        scope: Scope = frozenset(),
        delivery: Delivery = Delivery.BODY,
        audience: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        can_introspect: bool = False,
        lifetimes: LifetimeOverrides | None = None,
        rotation: RotationSettings | None = None,
    ) -> NewClient:
        """Register a client. A confidential client gets a fresh secret, returned once
        here and stored only as a hash. Raises `InvalidRequest` for a registration the
        rules refuse (`keyturn.core.registration`)."""
        redirect_uris = tuple(redirect_uris)
        grants = frozenset(grant_types) or _default_grants(client_type, bool(redirect_uris))
        secret = generate_secret(self._random) if client_type is ClientType.CONFIDENTIAL else None
        now = self._clock.now()
        client = Client(
            id=ClientId(client_id),
            type=client_type,
            secret_hash=hash_secret(secret) if secret else None,
            redirect_uris=redirect_uris,
            grant_types=grants,
            scope=scope,
            delivery=delivery,
            audience=tuple(audience),
            lifetimes=lifetimes or LifetimeOverrides(),
            enabled=True,
            created_at=now,
            allowed_origins=tuple(allowed_origins),
            can_introspect=can_introspect,
            rotation=rotation or RotationSettings(),
        )
        problem = registration_problem(client, self._lifetimes)
        if problem:
            raise InvalidRequest(problem)
        await self._store.add_client(
            client, SecurityEvent(type=EventType.CLIENT_CREATED, at=now, client_id=client.id)
        )
        return NewClient(client=client, secret=secret)

    async def list_clients(self) -> list[Client]:
        return await self._store.list_clients()

    async def get_client(self, client_id: str) -> Client:
        client = await self._store.get_client(ClientId(client_id))
        if client is None:
            raise NotFound(f"No client {client_id!r}.")
        return client

    async def update_rotation(self, client_id: str, changes: RotationSettings) -> Client:
        """Change a client's rotation policy: the values `changes` sets replace the
        client's, the others stay. Other processes apply it to a replay at once (a replay
        reads its client); a process that rotated for the client before keeps rotating
        its live tokens until it reads the client again."""
        client = await self.get_client(client_id)
        rotation = client.rotation.updated(changes)
        # Only the rotation policy changes, which no registration rule concerns: a row
        # stored before a rule stays usable, and what it would break is clamped or
        # ignored where it is used (docs/decisions/codes-and-registration.md).
        now = self._clock.now()
        await self._store.set_client_rotation(
            client.id,
            rotation,
            SecurityEvent(
                type=EventType.CLIENT_UPDATED,
                at=now,
                client_id=client.id,
                detail=rotation.describe(),
            ),
        )
        return replace(client, rotation=rotation)

    async def disable_client(self, client_id: str) -> list[EndedSession]:
        now = self._clock.now()
        return await self._store.disable_client(
            ClientId(client_id),
            now,
            SecurityEvent(
                type=EventType.CLIENT_DISABLED,
                at=now,
                client_id=ClientId(client_id),
                reason=RevocationReason.CLIENT_DISABLED.value,
            ),
        )

    # Keys

    async def list_keys(self) -> list[StoredKey]:
        return await self._store.list_keys()

    async def rotate_keys(self, use: KeyUse = KeyUse.SIGNING) -> list[StoredKey]:
        return await self._tokens.rotate(use)

    # Sessions

    async def list_sessions(
        self, username: str | None = None, *, include_revoked: bool = True
    ) -> list[Session]:
        user_id = (await self.user_named(username)).id if username is not None else None
        return await self._store.list_sessions(user_id, include_revoked=include_revoked)

    async def revoke_session(self, session_id: str) -> Session:
        return await self._sessions.end_by_id(SessionId(session_id), RevocationReason.ADMIN_REVOKED)

    # Audit and purge

    async def audit(
        self, *, type: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[RecordedEvent]:
        if type is not None and type not in {t.value for t in EventType}:
            raise InvalidRequest(
                "Unknown event type; one of: " + ", ".join(t.value for t in EventType)
            )
        return await self._store.list_events(type=type, since=since, limit=limit)

    async def purge(self, batch_size: int = PURGE_BATCH) -> int:
        """Delete ended sessions past `purge_retention`, authorization codes minutes
        after they expire and audit rows past `audit_retention`, in short batches, so
        rotations never wait long behind the purge. Returns how many were deleted."""
        total = 0
        while True:
            deleted = await self._store.purge_expired(
                self._clock.now(),
                self._retention,
                batch_size,
                code_retention_seconds=CODE_RETENTION_SECONDS,
                audit_retention_seconds=self._audit_retention,
            )
            total += deleted
            if deleted < batch_size:
                return total


def _default_grants(client_type: ClientType, redirects: bool) -> frozenset[GrantType]:
    """Without redirect URIs a client cannot use the authorization code grant."""
    code = {GrantType.AUTHORIZATION_CODE} if redirects else set()
    if client_type is ClientType.CONFIDENTIAL:
        return frozenset({*code, GrantType.REFRESH_TOKEN, GrantType.CLIENT_CREDENTIALS})
    return frozenset({*code, GrantType.REFRESH_TOKEN, GrantType.PASSWORD})
