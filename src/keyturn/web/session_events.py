"""GET /auth/sessions/{sid}/events: the story of one of the user's own sessions.

What the user sees of each event: when, what, why, the generation, and the address,
user agent and device name it came from — what a "recent security activity" page
shows. Never a token, never an operator's free-text detail, never another user's
session: another user's session, an unknown id and a malformed one all answer the
same 404, so the endpoint is no oracle of which sessions exist.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyturn.core.errors import InvalidRequest, NotFound
from keyturn.service.engine import Engine
from keyturn.service.timeline import MAX_CURSOR, MAX_PAGE, EventEntry, EventsPage
from keyturn.web.dpop import current_session
from keyturn.web.errors import NO_STORE
from keyturn.web.operation import (
    NO_STORE_HEADER,
    Schema,
    bearer_call,
    described,
    error,
    json_answer,
    sid_parameter,
)
from keyturn.web.responses import json_response

DEFAULT_LIMIT = 50
MAX_SESSION_ID = 64
_NUMBER = re.compile(r"[0-9]{1,19}")

SESSION_EVENTS: Schema = {
    "type": "object",
    "required": [
        "sid",
        "client_id",
        "created_at",
        "live",
        "ended_at",
        "ended_reason",
        "events",
        "next_cursor",
    ],
    "properties": {
        "sid": {"type": "string"},
        "client_id": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "live": {"type": "boolean"},
        "ended_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "When the session ended (or its deadline passed); null while live.",
        },
        "ended_reason": {
            "type": ["string", "null"],
            "description": "Why it ended: `logout`, `logout_all`, `reuse_outside_window`, "
            "`reuse_key_mismatch`, `replay_budget_exceeded`, `password_changed`, "
            "`idle_expired`, `absolute_expired`, `admin_revoked`, ... (the closed set of "
            "docs/observability.md); null while live.",
        },
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "at",
                    "kind",
                    "reason",
                    "generation",
                    "ip",
                    "user_agent",
                    "device_name",
                ],
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "kind": {
                        "type": "string",
                        "description": "`login_succeeded`, `session_created`, "
                        "`refresh_replayed`, `reuse_detected`, `session_revoked`, ...",
                    },
                    "reason": {"type": ["string", "null"]},
                    "generation": {
                        "type": ["integer", "null"],
                        "description": "The refresh token generation the event names: the "
                        "one presented, for a replay or a refusal.",
                    },
                    "ip": {"type": ["string", "null"]},
                    "user_agent": {"type": ["string", "null"]},
                    "device_name": {"type": ["string", "null"]},
                },
                "additionalProperties": False,
            },
        },
        "next_cursor": {
            "type": ["string", "null"],
            "description": "Pass as `cursor` for the next page; null on the last page.",
        },
    },
    "additionalProperties": False,
}
PARAMETERS = [
    sid_parameter(),
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_LIMIT},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "The `next_cursor` of the previous page.",
        "schema": {"type": "string"},
    },
]


def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidRequest(f"Send {name} once.")
    return values[0] if values else None


def _page(request: Request) -> tuple[int, int | None]:
    """The `limit` and `cursor` query parameters, checked before any session is read."""
    limit_text, cursor_text = _one(request, "limit"), _one(request, "cursor")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        if not _NUMBER.fullmatch(limit_text) or not 1 <= int(limit_text) <= MAX_PAGE:
            raise InvalidRequest(f"The limit is a number from 1 to {MAX_PAGE}.")
        limit = int(limit_text)
    cursor = None
    if cursor_text is not None:
        if not _NUMBER.fullmatch(cursor_text) or int(cursor_text) > MAX_CURSOR:
            raise InvalidRequest("The cursor is not one this endpoint gave.")
        cursor = int(cursor_text)
    return limit, cursor


def _event(entry: EventEntry) -> dict[str, Any]:
    return {
        "at": entry.at.isoformat(),
        "kind": entry.kind.value,
        "reason": entry.reason,
        "generation": entry.generation,
        "ip": entry.device.ip,
        "user_agent": entry.device.user_agent,
        "device_name": entry.device.name,
    }


def _body(page: EventsPage) -> dict[str, Any]:
    session, end = page.session, page.end
    return {
        "sid": session.id,
        "client_id": session.client_id,
        "created_at": session.created_at.isoformat(),
        "live": end.live,
        "ended_at": end.at.isoformat() if end.at is not None else None,
        "ended_reason": end.reason.value if end.reason is not None else None,
        "events": [_event(e) for e in page.events],
        "next_cursor": str(page.next_after) if page.next_after is not None else None,
    }


@described(
    get=bearer_call(
        "The events of one of this user's sessions, oldest first",
        {
            "200": json_answer(
                "A page of the session's events (logins, replays, refusals, its "
                "end; routine rotations are not events), and whether and why it "
                "ended. Ended sessions too: ask with another session's token.",
                SESSION_EVENTS,
                NO_STORE_HEADER,
            )
        },
        parameters=PARAMETERS,
        **{
            "404": json_answer(
                "No such session of this user: another user's session, an "
                "unknown id and a malformed one answer alike.",
                error("not_found"),
            )
        },
    )
)
async def session_events(request: Request, engine: Engine) -> Response:
    # Authenticated exactly as GET /auth/sessions: a Bearer token, or a DPoP-bound one
    # with a proof of its key (RFC 9449 §7.1).
    current = await current_session(request, engine)
    limit, cursor = _page(request)
    sid = request.path_params["sid"]
    if not isinstance(sid, str) or not 0 < len(sid) <= MAX_SESSION_ID:
        raise NotFound("No such session.")  # the same answer as any other session not found
    page = await engine.timelines.events_for(current.user_id, sid, after_id=cursor, limit=limit)
    return json_response(_body(page), headers=dict(NO_STORE))
