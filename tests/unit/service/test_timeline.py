"""The timeline built from a session's events: pure, no store."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from keyturn.core.audit import EventType, RecordedEvent
from keyturn.core.models import RevocationReason
from keyturn.service.timeline import (
    EXPLANATIONS,
    EndSource,
    EventEntry,
    Rotations,
    build_timeline,
    live_generation,
)
from support.store_values import T0, a_client, a_session, a_user, an_event

JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def test_every_reason_has_an_explanation() -> None:
    assert set(EXPLANATIONS) == set(RevocationReason)


def test_the_session_key_is_shown_only_where_the_session_accepted_the_request() -> None:
    session = a_session(a_user(), a_client(), generation=4, rotated_at=T0, dpop_jkt=JKT)
    session = replace(
        session,
        revoked_at=T0 + timedelta(seconds=3),
        revoked_reason=RevocationReason.REUSE_KEY_MISMATCH,
    )
    events = [
        RecordedEvent(1, an_event(EventType.LOGIN_SUCCEEDED, session_id=session.id, generation=0)),
        RecordedEvent(
            2,
            an_event(
                EventType.REFRESH_REPLAYED,
                at=T0 + timedelta(seconds=1),
                generation=3,
                reason="replayed_same_key",
                detail="live generation 4",
            ),
        ),
        RecordedEvent(
            3,
            an_event(
                EventType.REUSE_DETECTED,
                at=T0 + timedelta(seconds=3),
                generation=4,
                reason="reuse_key_mismatch",
                detail="live generation 4",
            ),
        ),
    ]
    timeline = build_timeline(session, events, T0 + timedelta(hours=1))
    keys = [(e.kind.value, e.dpop_jkt) for e in timeline.entries if isinstance(e, EventEntry)]
    assert keys == [
        ("login_succeeded", JKT),
        ("refresh_replayed", JKT),
        ("reuse_detected", None),  # another key, or none: not known
    ]
    assert timeline.end.source is EndSource.SESSION_EVENT
    rotations = [e for e in timeline.entries if isinstance(e, Rotations)]
    assert [(r.from_generation, r.to_generation, r.last_at) for r in rotations] == [(0, 4, T0)]


def test_the_live_generation_is_read_only_where_an_event_says_it() -> None:
    def one(**fields: object) -> int | None:
        return live_generation(RecordedEvent(1, an_event(**fields)))  # type: ignore[arg-type]

    assert one(kind=EventType.LOGIN_SUCCEEDED, generation=0) == 0
    assert one(kind=EventType.SESSION_CREATED, generation=0) == 0
    assert one(kind=EventType.REFRESH_REPLAYED, generation=8, detail="live generation 9") == 9
    assert one(kind=EventType.SESSION_REVOKED, generation=3) is None
    assert one(kind=EventType.FOREIGN_CLIENT_PRESENTED, detail="x, live generation 12") == 12


def test_an_end_without_its_event_comes_from_the_row() -> None:
    session = a_session(
        a_user(),
        a_client(),
        generation=2,
        rotated_at=T0 + timedelta(minutes=2),
        revoked_at=T0 + timedelta(minutes=5),
        revoked_reason=RevocationReason.ADMIN_REVOKED,
    )
    login = RecordedEvent(
        1, an_event(EventType.LOGIN_SUCCEEDED, session_id=session.id, generation=0)
    )
    timeline = build_timeline(session, [login], T0 + timedelta(hours=1))
    assert timeline.end.source is EndSource.SESSION_ROW
    assert timeline.end.at == T0 + timedelta(minutes=5)
    last = timeline.entries[-1]
    assert isinstance(last, Rotations)
    assert (last.from_generation, last.to_generation, last.before) == (0, 2, timeline.end.at)


def test_rotations_after_the_last_generation_go_before_later_events_by_time() -> None:
    # A password change made on this session after its rotations says no generation:
    # the rotations, whose last is at rotated_at, come before it.
    session = a_session(a_user(), a_client(), generation=3, rotated_at=T0 + timedelta(minutes=1))
    events = [
        RecordedEvent(1, an_event(EventType.LOGIN_SUCCEEDED, generation=0)),
        RecordedEvent(2, an_event(EventType.PASSWORD_CHANGED, at=T0 + timedelta(minutes=2))),
    ]
    timeline = build_timeline(session, events, T0 + timedelta(minutes=3))
    kinds = ["rotations" if isinstance(e, Rotations) else e.kind.value for e in timeline.entries]
    assert kinds == ["login_succeeded", "rotations", "password_changed"]
    rotations = timeline.entries[1]
    assert isinstance(rotations, Rotations)
    assert (rotations.after, rotations.before) == (T0, T0 + timedelta(minutes=2))
    assert timeline.end.live
