"""Model values to put in a store, for tests that talk to a store directly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import (
    Client,
    ClientType,
    Delivery,
    Device,
    GrantType,
    LifetimeOverrides,
    Session,
    User,
)

T0 = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def an_event(kind: EventType = EventType.SESSION_REVOKED, **fields: object) -> SecurityEvent:
    values: dict[str, object] = {"type": kind, "at": T0}
    values.update(fields)
    return SecurityEvent(**values)  # type: ignore[arg-type]


def a_user(name: str = "alice") -> User:
    return User(
        id=UserId(str(uuid.uuid4())),
        username=name,
        password_hash="$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        enabled=True,
        created_at=T0,
        password_changed_at=T0,
    )


def a_client(client_id: str = "native") -> Client:
    return Client(
        id=ClientId(client_id),
        type=ClientType.PUBLIC,
        secret_hash=None,
        redirect_uris=("https://app.test/cb",),
        grant_types=frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN}),
        scope=frozenset({"read", "write"}),
        delivery=Delivery.BODY,
        audience=("api",),
        lifetimes=LifetimeOverrides(),
        enabled=True,
        created_at=T0,
    )


def a_session(user: User, client: Client, *, created: datetime = T0, **fields: object) -> Session:
    values: dict[str, object] = {
        "id": SessionId(str(uuid.uuid4())),
        "user_id": user.id,
        "client_id": client.id,
        "scope": frozenset({"read"}),
        "salt": b"\x00salt\xff",
        "generation": 0,
        "mac_key_id": 1,
        "created_at": created,
        "last_used_at": created,
        "rotated_at": None,
        "idle_expires_at": created + timedelta(hours=1),
        "absolute_expires_at": created + timedelta(days=1),
        "device": Device(user_agent="Firefox", ip="203.0.113.9"),
    }
    values.update(fields)
    return Session(**values)  # type: ignore[arg-type]
