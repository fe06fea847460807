"""`keyturn sessions`: list, revoke, and explain one session's story."""

from __future__ import annotations

import click

from keyturn.cli.output import emit, plain, table
from keyturn.cli.runtime import common, options, run
from keyturn.core.ids import SessionId
from keyturn.core.models import Session
from keyturn.service.timeline import MAX_EVENTS, Ending, EndSource, Entry, Rotations, Timeline


def public(session: Session) -> dict[str, object]:
    """A session as shown: never its salt, so never anything that derives a token."""
    return {
        "sid": session.id,
        "user_id": session.user_id,
        "client_id": session.client_id,
        "scope": session.scope,
        "generation": session.generation,
        "created_at": session.created_at,
        "last_used_at": session.last_used_at,
        "idle_expires_at": session.idle_expires_at,
        "absolute_expires_at": session.absolute_expires_at,
        "revoked_at": session.revoked_at,
        "revoked_reason": session.revoked_reason,
        "device": session.device,
    }


@click.group()
def sessions() -> None:
    """Sessions: one login of one user on one device."""


@sessions.command("list")
@click.option("--user", "username", help="Only this user's sessions.")
@click.option("--all", "include_ended", is_flag=True, help="Include ended sessions.")
@common
@click.pass_context
def list_(ctx: click.Context, username: str | None, include_ended: bool) -> None:
    """List live sessions, newest first."""
    found = run(
        ctx,
        lambda engine: engine.admin.list_sessions(username, include_revoked=include_ended),
    )
    emit(
        [public(s) for s in found],
        as_json=options(ctx).json,
        columns=["sid", "client_id", "generation", "last_used_at", "revoked_reason"],
    )


@sessions.command("revoke")
@click.argument("sid")
@common
@click.pass_context
def revoke(ctx: click.Context, sid: str) -> None:
    """End one session: its refresh tokens stop working at once."""
    ended = run(ctx, lambda engine: engine.admin.revoke_session(sid))
    if options(ctx).json:
        emit({"sid": ended.id, "revoked": True}, as_json=True)
    else:
        click.echo(f"session {ended.id} ended")


def _entry(entry: Entry) -> dict[str, object]:
    if isinstance(entry, Rotations):
        return {
            "kind": "rotations",
            "from_generation": entry.from_generation,
            "to_generation": entry.to_generation,
            "count": entry.count,
            "after": entry.after,
            "before": entry.before,
            "last_at": entry.last_at,
        }
    return {
        "id": entry.id,
        "kind": entry.kind,
        "at": entry.at,
        "generation": entry.generation,
        "live_generation": entry.live_generation,
        "reason": entry.reason,
        "ip": entry.device.ip,
        "user_agent": entry.device.user_agent,
        "device_name": entry.device.name,
        "dpop_jkt": entry.dpop_jkt,
        "detail": entry.detail,
        "ends_session": entry.ends_session,
    }


def _end(end: Ending) -> dict[str, object]:
    return {
        "live": end.live,
        "source": end.source,
        "at": end.at,
        "reason": end.reason,
        "explanation": end.explanation,
        "generation": end.generation,
        "event": _entry(end.event) if end.event is not None else None,
    }


def _printable(value: object, width: int | None = None) -> str:
    """A cell an attacker's user agent cannot turn into terminal escapes."""
    text = "-" if value is None else "".join(c if c.isprintable() else "?" for c in str(value))
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def _row(entry: Entry) -> dict[str, str]:
    if isinstance(entry, Rotations):
        plural = "rotation" if entry.count == 1 else "rotations"
        note = f"{entry.count} {plural}, not recorded one by one"
        if entry.last_at is not None:
            note += f"; the last at {plain(entry.last_at)}"
        return {
            "at": "-",
            "generation": f"{entry.from_generation}->{entry.to_generation}",
            "kind": "rotations",
            "note": note,
        }
    notes = [entry.detail or "", "ends the session" if entry.ends_session else ""]
    return {
        "at": plain(entry.at),
        "generation": _printable(entry.generation),
        "kind": entry.kind.value,
        "reason": _printable(entry.reason),
        "ip": _printable(entry.device.ip, 39),
        "user_agent": _printable(entry.device.user_agent, 40),
        "dpop_jkt": _printable(entry.dpop_jkt, 12),
        "note": _printable("; ".join(n for n in notes if n)) if any(notes) else "-",
    }


def last_line(timeline: Timeline) -> str:
    """How the session ended and why, or that it is live: the answer in one line."""
    end, session = timeline.end, timeline.session
    if end.live:
        return (
            f"live at generation {end.generation}, last used {plain(session.last_used_at)}, "
            f"idle deadline {plain(session.idle_expires_at)}"
        )
    reason = end.reason.value if end.reason is not None else "unknown reason"
    line = f"ended {plain(end.at)} at generation {end.generation}: {reason}"
    if end.explanation:
        line += f" ({end.explanation})"
    where = {
        EndSource.SESSION_EVENT: "recorded by this session's event",
        EndSource.SHARED_EVENT: "recorded by one event for several sessions",
        EndSource.SESSION_ROW: "known from the session row only",
        EndSource.DEADLINE: "the deadline passed",
    }[end.source]
    if end.event is not None:
        where += f" #{end.event.id}"
        device = end.event.device
        if device.ip or device.user_agent:
            where += f" from {_printable(device.ip)} {_printable(device.user_agent, 60)}"
    return f"{line}; {where}"


@sessions.command("explain")
@click.argument("sid")
@common
@click.pass_context
def explain(ctx: click.Context, sid: str) -> None:
    """Why a session is where it is: login, rotations, replays, refusals, the end."""
    timeline = run(ctx, lambda engine: engine.timelines.explain(SessionId(sid)))
    session = timeline.session
    if options(ctx).json:
        emit(
            {
                "session": {**public(session), "dpop_jkt": session.dpop_jkt},
                "entries": [_entry(e) for e in timeline.entries],
                "end": _end(timeline.end),
                "complete": timeline.complete,
            },
            as_json=True,
        )
        return
    device = session.device
    click.echo(
        f"session {session.id}  user {session.user_id}  client {_printable(session.client_id)}"
    )
    click.echo(
        f"created {plain(session.created_at)} from {_printable(device.ip)} "
        f"{_printable(device.user_agent, 60)}; DPoP key {_printable(session.dpop_jkt)}"
    )
    table(
        [_row(e) for e in timeline.entries],
        ["at", "generation", "kind", "reason", "ip", "user_agent", "dpop_jkt", "note"],
    )
    if not timeline.complete:
        click.echo(f"(only the first {MAX_EVENTS} events are shown)")
    click.echo(last_line(timeline))
