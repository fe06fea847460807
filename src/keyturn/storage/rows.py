"""Turning models into column values and back, shared by the SQL stores. Times are
handed in and out by each store (aware datetimes on PostgreSQL, integer microseconds on
SQLite) through the `to_db`/`from_db` functions it passes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from keyturn.core.audit import EventType, RecordedEvent, SecurityEvent
from keyturn.core.ids import ClientId, KeyId, SessionId, UserId
from keyturn.core.models import (
    AuthorizationCode,
    Client,
    ClientType,
    Delivery,
    Device,
    GrantType,
    KeyState,
    KeyUse,
    LifetimeOverrides,
    Presentation,
    RevocationReason,
    Session,
    StoredKey,
    User,
)
from keyturn.core.policy import (
    ClientKind,
    DpopMode,
    ReplayBudget,
    ReplayLog,
    RotationSettings,
    format_budget,
    format_window,
    parse_window,
)
from keyturn.core.scopes import format_scope


class Row(Protocol):
    """A result row read by column name (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: str, /) -> Any: ...


ToDb = Callable[[datetime], Any]
FromDb = Callable[[Any], datetime]

USER_COLUMNS = ("id", "username", "password_hash", "enabled", "created_at", "password_changed_at")
CLIENT_COLUMNS = (
    "id", "type", "secret_hash", "redirect_uris", "grant_types", "scope", "delivery",
    "audience", "access_token_ttl", "session_idle_ttl", "session_max_ttl", "enabled",
    "created_at", "allowed_origins", "can_introspect", "rotation",
)  # fmt: skip
SESSION_COLUMNS = (
    "id", "user_id", "client_id", "scope", "salt", "generation", "mac_key_id", "created_at",
    "authenticated_at", "last_used_at", "rotated_at", "idle_expires_at",
    "absolute_expires_at", "revoked_at", "revoked_reason", "user_agent", "ip", "device_name",
    "replay_newest", "replay_bits", "dpop_jkt", "rotated_ip",
)  # fmt: skip
CODE_COLUMNS = (
    "code_hash", "client_id", "user_id", "redirect_uri", "redirect_uri_given",
    "code_challenge", "scope", "authenticated_at", "created_at", "expires_at", "used_at",
    "session_id", "user_agent", "ip",
)  # fmt: skip
KEY_COLUMNS = (
    "kid", "use", "alg", "state", "public_jwk", "encrypted_private", "created_at",
    "activated_at", "retired_at", "publish_until",
)  # fmt: skip
EVENT_COLUMNS = (
    "type", "at", "user_id", "client_id", "session_id", "generation", "reason",
    "user_agent", "ip", "device_name", "detail",
)  # fmt: skip


def _opt(value: datetime | None, to_db: ToDb) -> Any:
    return None if value is None else to_db(value)


def _opt_from(value: Any, from_db: FromDb) -> datetime | None:
    return None if value is None else from_db(value)


def user_values(user: User, to_db: ToDb) -> tuple[Any, ...]:
    return (
        user.id,
        user.username,
        user.password_hash,
        user.enabled,
        to_db(user.created_at),
        to_db(user.password_changed_at),
    )


def user_from(row: Row, from_db: FromDb, prefix: str = "") -> User:
    return User(
        id=UserId(row[prefix + "id"]),
        username=row[prefix + "username"],
        password_hash=row[prefix + "password_hash"],
        enabled=bool(row[prefix + "enabled"]),
        created_at=from_db(row[prefix + "created_at"]),
        password_changed_at=from_db(row[prefix + "password_changed_at"]),
    )


USER_AS = ", ".join(f"u.{c} AS u_{c}" for c in USER_COLUMNS)
SESSION_WITH_USER = (
    f"SELECT s.*, {USER_AS} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = {{param}}"  # noqa: S608 - fixed names; {param} is a placeholder
)
"""A session and its user in one row; the user's columns are prefixed `u_`."""

CLIENT_AS = ", ".join(f"c.{c} AS c_{c}" for c in CLIENT_COLUMNS)
PRESENTATION = f"SELECT {CLIENT_AS}, s.*, {USER_AS} FROM clients c LEFT JOIN sessions s ON s.id = {{session}} LEFT JOIN users u ON u.id = s.user_id WHERE c.id = {{client}}"  # noqa: E501, S608 - fixed names; {session} and {client} are placeholders
"""A client, and the session with its user when there is one, in one row (one round
trip per rotation): the client's columns are prefixed `c_`, the user's `u_`, and the
session's columns are NULL when the session does not exist."""


def presentation_from(row: Row | None, from_db: FromDb) -> Presentation:
    if row is None:
        return Presentation(client=None)
    client = client_from(row, from_db, "c_")
    if row["id"] is None:
        return Presentation(client=client)
    return Presentation(client, session_from(row, from_db), user_from(row, from_db, "u_"))


def client_values(client: Client, to_db: ToDb) -> tuple[Any, ...]:
    return (
        client.id,
        client.type.value,
        client.secret_hash,
        json.dumps(list(client.redirect_uris)),
        json.dumps(sorted(g.value for g in client.grant_types)),
        format_scope(client.scope),
        client.delivery.value,
        json.dumps(list(client.audience)),
        client.lifetimes.access_token_ttl,
        client.lifetimes.session_idle_ttl,
        client.lifetimes.session_max_ttl,
        client.enabled,
        to_db(client.created_at),
        json.dumps(list(client.allowed_origins)),
        client.can_introspect,
        rotation_json(client.rotation),
    )


_PARSED_CLIENTS: dict[tuple[Any, ...], Client] = {}
_PARSED_CLIENTS_MAX = 256


def client_from(row: Row, from_db: FromDb, prefix: str = "") -> Client:
    """The client a row holds. Every rotation reads its client's row afresh (a disabled
    client is refused at once), but parsing it (four JSON columns) costs more than the
    read: a row identical to one parsed before gives the same immutable `Client`."""
    raw = (from_db, *(row[prefix + c] for c in CLIENT_COLUMNS))
    parsed = _PARSED_CLIENTS.get(raw)
    if parsed is None:
        if len(_PARSED_CLIENTS) >= _PARSED_CLIENTS_MAX:
            _PARSED_CLIENTS.clear()
        parsed = _PARSED_CLIENTS[raw] = _parse_client(row, from_db, prefix)
    return parsed


def _parse_client(row: Row, from_db: FromDb, prefix: str) -> Client:
    p = prefix
    return Client(
        id=ClientId(row[p + "id"]),
        type=ClientType(row[p + "type"]),
        secret_hash=row[p + "secret_hash"],
        redirect_uris=tuple(json.loads(row[p + "redirect_uris"])),
        grant_types=frozenset(GrantType(g) for g in json.loads(row[p + "grant_types"])),
        scope=frozenset(row[p + "scope"].split()),
        delivery=Delivery(row[p + "delivery"]),
        audience=tuple(json.loads(row[p + "audience"])),
        lifetimes=LifetimeOverrides(
            access_token_ttl=row[p + "access_token_ttl"],
            session_idle_ttl=row[p + "session_idle_ttl"],
            session_max_ttl=row[p + "session_max_ttl"],
        ),
        enabled=bool(row[p + "enabled"]),
        created_at=from_db(row[p + "created_at"]),
        allowed_origins=tuple(json.loads(row[p + "allowed_origins"])),
        can_introspect=bool(row[p + "can_introspect"]),
        rotation=rotation_from_json(row[p + "rotation"]),
    )


def rotation_json(settings: RotationSettings) -> str:
    """A client's rotation policy as the `clients.rotation` column holds it: only what
    was set, so a preset changed in a later release reaches the clients of that kind."""
    held: dict[str, Any] = {}
    if settings.kind is not None:
        held["kind"] = settings.kind.value
    if settings.retry_window is not None:
        held["retry_window"] = format_window(settings.retry_window)
    if settings.replay_budget is not None:
        held["replay_budget"] = format_budget(settings.replay_budget)
    if settings.rotate is not None:
        held["rotate"] = settings.rotate
    if settings.same_key_generations is not None:
        held["same_key_generations"] = settings.same_key_generations
    if settings.dpop is not None:
        held["dpop"] = settings.dpop.value
    return json.dumps(held, sort_keys=True)


def rotation_from_json(text: str) -> RotationSettings:
    held = json.loads(text)
    window = held.get("retry_window")
    budget = held.get("replay_budget")
    return RotationSettings(
        kind=ClientKind(held["kind"]) if "kind" in held else None,
        retry_window=None if window is None else parse_window(window),
        replay_budget=None if budget is None else ReplayBudget.parse(budget),
        rotate=held.get("rotate"),
        same_key_generations=held.get("same_key_generations"),
        dpop=DpopMode(held["dpop"]) if "dpop" in held else None,
    )


def session_values(session: Session, to_db: ToDb) -> tuple[Any, ...]:
    return (
        session.id,
        session.user_id,
        session.client_id,
        format_scope(session.scope),
        session.salt,
        session.generation,
        session.mac_key_id,
        to_db(session.created_at),
        _opt(session.authenticated_at, to_db),
        to_db(session.last_used_at),
        _opt(session.rotated_at, to_db),
        to_db(session.idle_expires_at),
        to_db(session.absolute_expires_at),
        _opt(session.revoked_at, to_db),
        session.revoked_reason.value if session.revoked_reason else None,
        session.device.user_agent,
        session.device.ip,
        session.device.name,
        session.replays.newest,
        session.replays.bits,
        session.dpop_jkt,
        session.rotated_ip,
    )


def session_from(row: Row, from_db: FromDb, prefix: str = "") -> Session:
    p = prefix
    return Session(
        id=SessionId(row[p + "id"]),
        user_id=UserId(row[p + "user_id"]),
        client_id=ClientId(row[p + "client_id"]),
        scope=frozenset(row[p + "scope"].split()),
        salt=bytes(row[p + "salt"]),
        generation=int(row[p + "generation"]),
        mac_key_id=int(row[p + "mac_key_id"]),
        created_at=from_db(row[p + "created_at"]),
        authenticated_at=_opt_from(row[p + "authenticated_at"], from_db),
        last_used_at=from_db(row[p + "last_used_at"]),
        rotated_at=_opt_from(row[p + "rotated_at"], from_db),
        idle_expires_at=from_db(row[p + "idle_expires_at"]),
        absolute_expires_at=from_db(row[p + "absolute_expires_at"]),
        revoked_at=_opt_from(row[p + "revoked_at"], from_db),
        revoked_reason=RevocationReason(row[p + "revoked_reason"])
        if row[p + "revoked_reason"]
        else None,
        device=Device(
            user_agent=row[p + "user_agent"], ip=row[p + "ip"], name=row[p + "device_name"]
        ),
        replays=ReplayLog(int(row[p + "replay_newest"]), int(row[p + "replay_bits"])),
        dpop_jkt=row[p + "dpop_jkt"],
        rotated_ip=row[p + "rotated_ip"],
    )


def code_values(code: AuthorizationCode, to_db: ToDb) -> tuple[Any, ...]:
    return (
        code.code_hash,
        code.client_id,
        code.user_id,
        code.redirect_uri,
        code.redirect_uri_given,
        code.code_challenge,
        format_scope(code.scope),
        to_db(code.authenticated_at),
        to_db(code.created_at),
        to_db(code.expires_at),
        _opt(code.used_at, to_db),
        code.session_id,
        code.device.user_agent,
        code.device.ip,
    )


def code_from(row: Row, from_db: FromDb) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash=row["code_hash"],
        client_id=ClientId(row["client_id"]),
        user_id=UserId(row["user_id"]),
        redirect_uri=row["redirect_uri"],
        redirect_uri_given=bool(row["redirect_uri_given"]),
        code_challenge=row["code_challenge"],
        scope=frozenset(row["scope"].split()),
        authenticated_at=from_db(row["authenticated_at"]),
        created_at=from_db(row["created_at"]),
        expires_at=from_db(row["expires_at"]),
        used_at=_opt_from(row["used_at"], from_db),
        session_id=SessionId(row["session_id"]) if row["session_id"] else None,
        device=Device(user_agent=row["user_agent"], ip=row["ip"]),
    )


def key_values(key: StoredKey, to_db: ToDb) -> tuple[Any, ...]:
    return (
        key.kid,
        key.use.value,
        key.alg,
        key.state.value,
        key.public_jwk,
        key.encrypted_private,
        to_db(key.created_at),
        _opt(key.activated_at, to_db),
        _opt(key.retired_at, to_db),
        _opt(key.publish_until, to_db),
    )


def key_from(row: Row, from_db: FromDb) -> StoredKey:
    return StoredKey(
        kid=KeyId(row["kid"]),
        use=KeyUse(row["use"]),
        alg=row["alg"],
        state=KeyState(row["state"]),
        public_jwk=row["public_jwk"],
        encrypted_private=bytes(row["encrypted_private"]),
        created_at=from_db(row["created_at"]),
        activated_at=_opt_from(row["activated_at"], from_db),
        retired_at=_opt_from(row["retired_at"], from_db),
        publish_until=_opt_from(row["publish_until"], from_db),
    )


def event_values(event: SecurityEvent, to_db: ToDb) -> tuple[Any, ...]:
    return (
        event.type.value,
        to_db(event.at),
        event.user_id,
        event.client_id,
        event.session_id,
        event.generation,
        event.reason,
        event.device.user_agent,
        event.device.ip,
        event.device.name,
        event.detail,
    )


def event_from(row: Row, from_db: FromDb) -> RecordedEvent:
    return RecordedEvent(
        id=int(row["id"]),
        event=SecurityEvent(
            type=EventType(row["type"]),
            at=from_db(row["at"]),
            user_id=UserId(row["user_id"]) if row["user_id"] else None,
            client_id=ClientId(row["client_id"]) if row["client_id"] else None,
            session_id=SessionId(row["session_id"]) if row["session_id"] else None,
            generation=row["generation"],
            reason=row["reason"],
            device=Device(user_agent=row["user_agent"], ip=row["ip"], name=row["device_name"]),
            detail=row["detail"],
        ),
    )
