"""The revocation feed: which sessions ended, for resource servers that verify access
tokens locally and must stop honouring the still-unexpired ones of an ended session.

A page lists sessions in `(revoked_at, id)` order after a cursor. Each item says when
it may be forgotten: when the last access token of that session expires (its revocation
plus the client's access-token lifetime, never past the session's absolute deadline),
plus the longest a verifier may still accept an expired token (`VERIFIER_LEEWAY`) and a
margin for clocks.
A revocation commits shortly after the time it carries, so a follower should re-read a
few seconds behind its newest item (see `keyturn.verify.revocations`).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from keyturn.core.errors import InvalidClient, InvalidRequest
from keyturn.core.ids import ClientId
from keyturn.core.models import Client, Session
from keyturn.core.ports import Clock, Store
from keyturn.service.config import EngineConfig

MAX_PAGE = 1000
_B64URL = re.compile(r"[A-Za-z0-9_-]{0,64}")
LONGEST_ACCESS_TOKEN = 24 * 3600
"""No access token lives longer than a day (the settings' bound), so a follower that
starts from nothing needs the revocations of the last day only."""
VERIFIER_LEEWAY = 60
"""The largest leeway the verify kit allows (`keyturn.verify.verifier.MAX_LEEWAY`): a
verifier may accept a token this long past its `exp` (RFC 7519 §4.1.4 permits "some
small leeway"), so a revocation forgotten at `exp` would let the token back in."""
FORGET_MARGIN = 10
"""Seconds more still: the clocks of keyturn's hosts and of the verifiers differ."""
_KEEP_PAST_EXPIRY = timedelta(seconds=VERIFIER_LEEWAY + FORGET_MARGIN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Revoked:
    session_id: str
    revoked_at: datetime
    forget_after: datetime


@dataclass(frozen=True, slots=True)
class FeedPage:
    items: list[Revoked]
    cursor: str
    """Where the next page starts: the position of the last item (or the one asked)."""
    more: bool


def encode_cursor(at: datetime, session_id: str) -> str:
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{base64.urlsafe_b64encode(session_id.encode()).decode().rstrip('=')}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """`InvalidRequest` for anything this server did not write."""
    micros, _, sid = cursor.partition(".")
    try:
        if not micros.isdigit() or len(micros) > 18 or not _B64URL.fullmatch(sid):
            raise ValueError
        at = _EPOCH + timedelta(microseconds=int(micros))
        return at, base64.urlsafe_b64decode(sid + "=" * (-len(sid) % 4)).decode("ascii")
    except (ValueError, OverflowError):
        raise InvalidRequest("The since cursor is not one this server issued.") from None


class RevocationPages:
    """The feed's pages, for the clients allowed to read it."""

    def __init__(self, store: Store, clock: Clock, config: EngineConfig) -> None:
        self._store = store
        self._clock = clock
        self._config = config

    async def page(self, caller: Client, cursor: str | None, limit: int = MAX_PAGE) -> FeedPage:
        """Sessions revoked after `cursor`; without one, every revocation whose access
        tokens may still be live. Only a resource server (`can_introspect`) may read."""
        if not caller.can_introspect:
            raise InvalidClient(detail="client may not read the revocation feed")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit is between 1 and {MAX_PAGE}.")
        now = self._clock.now()
        if cursor is None:
            after = now - timedelta(seconds=LONGEST_ACCESS_TOKEN) - _KEEP_PAST_EXPIRY
            after_id = ""
        else:
            after, after_id = decode_cursor(cursor)
        found = await self._store.list_revoked(after, after_id, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        clients: dict[ClientId, Client | None] = {}
        items = []
        for session in found:
            if session.client_id not in clients:
                clients[session.client_id] = await self._store.get_client(session.client_id)
            item = self._item(session, clients[session.client_id])
            if item.forget_after > now:
                items.append(item)
        if found:
            last = found[-1]
            cursor = encode_cursor(last.revoked_at or after, last.id)
        return FeedPage(items, cursor or encode_cursor(after, after_id), more)

    def _item(self, session: Session, client: Client | None) -> Revoked:
        revoked_at = session.revoked_at or self._clock.now()
        ttl = (
            self._config.lifetimes_for(client).access_token_ttl
            if client is not None
            else LONGEST_ACCESS_TOKEN
        )
        last_expiry = min(revoked_at + timedelta(seconds=ttl), session.absolute_expires_at)
        return Revoked(session.id, revoked_at, last_expiry + _KEEP_PAST_EXPIRY)
