"""The read operations of the two SQL stores, written once over `storage.sql`'s texts
and `storage.rows`' parsing. A store supplies how it runs a statement (`_one`, `_all`)
and how it hands times back (`from_db`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keyturn.core.audit import RecordedEvent
from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import AuthorizationCode, Client, Presentation, Session, StoredKey, User
from keyturn.storage import rows, sql


class SqlReads:
    """Reads by key and listings, identical on SQLite and PostgreSQL."""

    def __init__(self, to_db: rows.ToDb, from_db: rows.FromDb) -> None:
        self._to_db = to_db
        self._from_db = from_db

    async def _one(self, text: str, *args: Any) -> Any:
        """The first row of `text` (in `storage.sql`'s placeholders), or None."""
        raise NotImplementedError

    async def _all(self, text: str, *args: Any) -> list[Any]:
        """Every row of `text` (in `storage.sql`'s placeholders)."""
        raise NotImplementedError

    async def get_user(self, user_id: UserId) -> User | None:
        row = await self._one(sql.USER_BY_ID, user_id)
        return rows.user_from(row, self._from_db) if row else None

    async def find_user(self, username: str) -> User | None:
        row = await self._one(sql.USER_BY_NAME, username)
        return rows.user_from(row, self._from_db) if row else None

    async def list_users(self) -> list[User]:
        return [rows.user_from(r, self._from_db) for r in await self._all(sql.USERS)]

    async def get_client(self, client_id: ClientId) -> Client | None:
        row = await self._one(sql.CLIENT_BY_ID, client_id)
        return rows.client_from(row, self._from_db) if row else None

    async def list_clients(self) -> list[Client]:
        return [rows.client_from(r, self._from_db) for r in await self._all(sql.CLIENTS)]

    async def get_session(self, session_id: SessionId) -> Session | None:
        row = await self._one(sql.SESSION_BY_ID, session_id)
        return rows.session_from(row, self._from_db) if row else None

    async def get_session_with_user(self, session_id: SessionId) -> tuple[Session, User] | None:
        row = await self._one(sql.SESSION_WITH_USER, session_id)
        if row is None:
            return None
        return rows.session_from(row, self._from_db), rows.user_from(row, self._from_db, "u_")

    async def get_presentation(self, client_id: ClientId, session_id: SessionId) -> Presentation:
        row = await self._one(sql.PRESENTATION, client_id, session_id)
        return rows.presentation_from(row, self._from_db)

    async def get_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        row = await self._one(sql.CODE_BY_HASH, code_hash)
        return rows.code_from(row, self._from_db) if row else None

    async def list_keys(self) -> list[StoredKey]:
        return [rows.key_from(r, self._from_db) for r in await self._all(sql.KEYS)]

    async def list_events(
        self,
        *,
        type: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[RecordedEvent]:
        args: list[Any] = [] if type is None else [type]
        if since is not None:
            args.append(self._to_db(since))
        found = await self._all(sql.EVENTS[type is not None, since is not None], *args, limit)
        return [rows.event_from(r, self._from_db) for r in found]

    async def list_session_events(
        self, session_id: SessionId, *, after_id: int | None, limit: int
    ) -> list[RecordedEvent]:
        found = await self._all(sql.SESSION_EVENTS, session_id, after_id or 0, limit)
        return [rows.event_from(r, self._from_db) for r in found]
