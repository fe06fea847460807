"""A session's timeline: what happened to it and why it ended, from its audit events
and its row.

Routine rotations write no audit row (it would double a rotation's write cost), so
they are never entries of their own. Events that say the session's live generation
(its creation, every replay, every refusal) bound them: between two such events the
difference of generations is how many rotations happened, and the row's `rotated_at`
is when the last one did. No rotation is given a time the store does not hold.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from keyturn.core.audit import EventType, RecordedEvent, live_generation_in
from keyturn.core.errors import InvalidRequest, NotFound
from keyturn.core.ids import SessionId, UserId
from keyturn.core.models import Device, RevocationReason, Session
from keyturn.core.ports import Clock, Store

MAX_EVENTS = 10_000
"""The most events `explain` reads of one session; past it the timeline says it is
incomplete rather than reading without bound."""
_PAGE = 500
MAX_PAGE = 200
"""The most events one page of `events_for` holds."""
MAX_CURSOR = 2**63 - 1
"""Event ids are signed 64-bit integers in every store."""

# The events whose request was accepted on the session: a session bound to a DPoP key
# accepts nothing but a proof of that key (RFC 9449 §5, core/rotation.py), so these,
# and only these, are known to be proven by the session's key.
_PROVEN_BY_SESSION_KEY = frozenset(
    {EventType.LOGIN_SUCCEEDED, EventType.SESSION_CREATED, EventType.REFRESH_REPLAYED}
)

EXPLANATIONS: dict[RevocationReason, str] = {
    RevocationReason.LOGOUT: "the user logged out on this device",
    RevocationReason.LOGOUT_ALL: "the user logged out everywhere",
    RevocationReason.REUSE_OUTSIDE_WINDOW: (
        "a rotated-out refresh token came back after its retry window (or one older than "
        "its predecessor): two holders of one token, the session ended as stolen"
    ),
    RevocationReason.REUSE_KEY_MISMATCH: (
        "a refresh token bound to a DPoP key came without a proof of that key: "
        "the session ended as stolen"
    ),
    RevocationReason.REPLAY_BUDGET_EXCEEDED: (
        "more replayed generations than the client's replay budget allows, as a thief "
        "in lockstep with the device replays on nearly every rotation: the session ended "
        "as stolen"
    ),
    RevocationReason.ADMIN_REVOKED: "an administrator ended it",
    RevocationReason.PASSWORD_CHANGED: "the user's password changed",
    RevocationReason.USER_DISABLED: "the user was disabled",
    RevocationReason.CLIENT_DISABLED: "the client was disabled",
    RevocationReason.IDLE_EXPIRED: "it was not used before its idle deadline",
    RevocationReason.ABSOLUTE_EXPIRED: "it reached its absolute lifetime",
    RevocationReason.SUPERSEDED_AT_LOGIN: "the same device logged in again",
    RevocationReason.TOKEN_REVOKED: "its client revoked the refresh token (RFC 7009)",
    RevocationReason.CODE_REPLAYED: (
        "the authorization code that opened it was presented again: the session ended as stolen"
    ),
}
"""Why a session ended, in a sentence an operator can read to the user."""


@dataclass(frozen=True, slots=True)
class EventEntry:
    """One audit event of the session."""

    id: int
    at: datetime
    kind: EventType
    reason: str | None
    generation: int | None
    """The generation the event names: the one presented, for a replay or a refusal."""
    live_generation: int | None
    """The session's generation when it happened, where the event says it."""
    device: Device
    dpop_jkt: str | None
    """The DPoP key that proved the request, where that is known: the session's own key
    for what the session accepted (its login, a replay); unknown for refusals."""
    detail: str | None
    ends_session: bool
    """This event records the end of the session."""


@dataclass(frozen=True, slots=True)
class Rotations:
    """Routine rotations, not recorded one by one: generation `from_generation` to
    `to_generation`, after the entry at `after` and before the one at `before` (`None`:
    before now or the end)."""

    from_generation: int
    to_generation: int
    after: datetime
    before: datetime | None
    last_at: datetime | None
    """When `to_generation` was reached, when the session row knows it (the last
    rotation of the session); `None` otherwise."""

    @property
    def count(self) -> int:
        return self.to_generation - self.from_generation


Entry = EventEntry | Rotations


class EndSource(enum.StrEnum):
    """Where the end of a session is known from."""

    LIVE = "live"
    """It has not ended."""
    SESSION_EVENT = "session_event"
    """An audit event of this session records it."""
    SHARED_EVENT = "shared_event"
    """One audit event records it for several sessions (logout everywhere, a password
    change, a disabled user or client, a theft that ends every session of the user)."""
    SESSION_ROW = "session_row"
    """Only the session row holds it (no event found)."""
    DEADLINE = "deadline"
    """A deadline passed; the row is marked at its next presentation or purged."""


@dataclass(frozen=True, slots=True)
class Ending:
    """How the session ended, or that it is live."""

    source: EndSource
    generation: int
    at: datetime | None = None
    reason: RevocationReason | None = None
    event: EventEntry | None = None
    """The event that records the end (its device says where it came from)."""

    @property
    def live(self) -> bool:
        return self.source is EndSource.LIVE

    @property
    def explanation(self) -> str | None:
        return EXPLANATIONS.get(self.reason) if self.reason is not None else None


@dataclass(frozen=True, slots=True)
class Timeline:
    session: Session
    entries: tuple[Entry, ...]
    end: Ending
    complete: bool
    """False when the session has more events than `MAX_EVENTS`: the first ones are shown."""


@dataclass(frozen=True, slots=True)
class EventsPage:
    """One page of a session's events, for its user."""

    session: Session
    events: tuple[EventEntry, ...]
    end: Ending
    next_after: int | None
    """The cursor of the next page; `None` on the last page."""


def live_generation(recorded: RecordedEvent) -> int | None:
    """The session's generation when `recorded` happened, where the event says it."""
    event = recorded.event
    if event.type in (EventType.LOGIN_SUCCEEDED, EventType.SESSION_CREATED):
        return 0 if event.generation == 0 else None
    return live_generation_in(event.detail)


def _entry(recorded: RecordedEvent, session: Session, ends: bool) -> EventEntry:
    event = recorded.event
    return EventEntry(
        id=recorded.id,
        at=event.at,
        kind=event.type,
        reason=event.reason,
        generation=event.generation,
        live_generation=live_generation(recorded),
        device=event.device,
        dpop_jkt=session.dpop_jkt if event.type in _PROVEN_BY_SESSION_KEY else None,
        detail=event.detail,
        ends_session=ends,
    )


def _records_end(recorded: RecordedEvent, session: Session) -> bool:
    """Whether `recorded` is the event written with the session's revocation: the
    stores write both with one time, in one transaction."""
    event = recorded.event
    return (
        session.revoked_at is not None
        and session.revoked_reason is not None
        and event.at == session.revoked_at
        and event.reason == session.revoked_reason.value
        and event.type is not EventType.PASSWORD_CHANGED  # the session that was kept
    )


def _deadline_end(session: Session, now: datetime) -> Ending | None:
    deadline = min(session.idle_expires_at, session.absolute_expires_at)
    if now < deadline:
        return None
    reason = (
        RevocationReason.ABSOLUTE_EXPIRED
        if deadline >= session.absolute_expires_at
        else RevocationReason.IDLE_EXPIRED
    )
    return Ending(EndSource.DEADLINE, session.generation, deadline, reason)


def ending_of(
    session: Session,
    now: datetime,
    own: Sequence[EventEntry] = (),
    shared: EventEntry | None = None,
) -> Ending:
    """How `session` ended: from the event of its own that records it (`own`), else
    from an event shared with other sessions, else from the row; or that it is live."""
    if session.revoked_at is None:
        return _deadline_end(session, now) or Ending(EndSource.LIVE, session.generation)
    recorded = next((e for e in own if e.ends_session), None)
    source = EndSource.SESSION_ROW
    if recorded is not None:
        source = EndSource.SESSION_EVENT
    elif shared is not None:
        recorded, source = shared, EndSource.SHARED_EVENT
    return Ending(source, session.generation, session.revoked_at, session.revoked_reason, recorded)


def build_timeline(
    session: Session,
    events: Sequence[RecordedEvent],
    now: datetime,
    *,
    shared_end: RecordedEvent | None = None,
    complete: bool = True,
) -> Timeline:
    """The timeline of `session` from its events (oldest first): each event, and the
    rotations between them where the generations they record tell them."""
    entries: list[Entry] = []
    own: list[EventEntry] = []
    end_seen = False
    known, known_at, known_index = 0, session.created_at, 0
    for recorded in events:
        ends = not end_seen and _records_end(recorded, session)
        end_seen = end_seen or ends
        entry = _entry(recorded, session, ends)
        live = entry.live_generation
        if live is not None and live > known:
            last_at = session.rotated_at if live == session.generation else None
            entries.append(Rotations(known, live, known_at, entry.at, last_at))
        entries.append(entry)
        own.append(entry)
        if live is not None and live >= known:
            known, known_at, known_index = live, entry.at, len(entries)
    shared = _entry(shared_end, session, True) if shared_end is not None else None
    end = ending_of(session, now, own, shared)
    if complete and session.generation > known:
        # The rotations since the last event that told the generation: the last of them
        # at `rotated_at`, so they go before the first later entry after that time.
        last_at = session.rotated_at
        position = known_index
        while position < len(entries) and last_at is not None and _at(entries[position]) <= last_at:
            position += 1
        before = _at(entries[position]) if position < len(entries) else end.at
        entries.insert(position, Rotations(known, session.generation, known_at, before, last_at))
    return Timeline(session, tuple(entries), end, complete)


def _at(entry: Entry) -> datetime:
    # Only events follow the last event that told the generation: rotations are placed
    # before such an event, never after it.
    return entry.at if isinstance(entry, EventEntry) else entry.after


class SessionTimelines:
    """Reading a session's story: the operator's whole timeline, the user's own events."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def explain(self, session_id: SessionId) -> Timeline:
        """The whole timeline of a session, for an operator. `NotFound` if unknown."""
        session = await self._store.get_session(session_id)
        if session is None:
            raise NotFound("No such session.")
        events: list[RecordedEvent] = []
        after: int | None = None
        while len(events) < MAX_EVENTS:
            page = await self._store.list_session_events(
                session.id, after_id=after, limit=min(_PAGE, MAX_EVENTS - len(events))
            )
            events += page
            if len(page) < _PAGE:
                break
            after = page[-1].id
        complete = len(events) < MAX_EVENTS
        own_end = any(_records_end(e, session) for e in events)
        shared = None if own_end else await self._shared_end(session)
        return build_timeline(
            session, events, self._clock.now(), shared_end=shared, complete=complete
        )

    async def _shared_end(self, session: Session) -> RecordedEvent | None:
        """The one event written with this session's revocation and others' (it names
        the user or the client, not this session), if the session ended so."""
        reason = session.revoked_reason
        if session.revoked_at is None or reason is None:
            return None
        kinds = {
            RevocationReason.PASSWORD_CHANGED: EventType.PASSWORD_CHANGED,
            RevocationReason.USER_DISABLED: EventType.USER_DISABLED,
            RevocationReason.CLIENT_DISABLED: EventType.CLIENT_DISABLED,
        }
        kind = kinds.get(reason) or (
            EventType.REUSE_DETECTED if reason.signals_theft else EventType.SESSION_REVOKED
        )
        found = await self._store.list_events(type=kind.value, since=session.revoked_at, limit=100)
        for recorded in found:
            event = recorded.event
            if event.at != session.revoked_at or event.reason != reason.value:
                continue
            if event.user_id == session.user_id or (
                event.user_id is None and event.client_id == session.client_id
            ):
                return recorded
        return None

    async def events_for(
        self, owner: UserId, session_id: str, *, after_id: int | None, limit: int
    ) -> EventsPage:
        """A page of the events of one of `owner`'s sessions, oldest first. `NotFound`,
        the same for every case, if the session is unknown, malformed or another
        user's: the answer is no oracle of which sessions exist."""
        if not 0 < limit <= MAX_PAGE or not 0 <= (after_id or 0) <= MAX_CURSOR:
            raise InvalidRequest("The limit or the cursor is out of range.")
        session = await self._store.get_session(SessionId(session_id))
        if session is None or session.user_id != owner:
            raise NotFound("No such session.")
        found = await self._store.list_session_events(
            session.id, after_id=after_id, limit=limit + 1
        )
        page = found[:limit]
        # An event names its user; one of another user's would never be shown, even if
        # a session id were ever shared.
        mine = [r for r in page if r.event.user_id in (None, owner)]
        entries = tuple(_entry(r, session, _records_end(r, session)) for r in mine)
        return EventsPage(
            session=session,
            events=entries,
            end=ending_of(session, self._clock.now(), entries),
            next_after=page[-1].id if len(found) > limit else None,
        )
