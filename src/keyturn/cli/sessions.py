"""`keyturn sessions`: list and revoke."""

from __future__ import annotations

import click

from keyturn.cli.output import emit
from keyturn.cli.runtime import common, options, run
from keyturn.core.models import Session


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
