"""`keyturn users`: add, list, disable."""

from __future__ import annotations

import sys

import click

from keyturn.cli.output import emit
from keyturn.cli.runtime import common, options, run
from keyturn.core.models import User


def _public(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "username": user.username,
        "enabled": user.enabled,
        "created_at": user.created_at,
    }


@click.group()
def users() -> None:
    """Users who log in."""


@users.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@common
@click.pass_context
def add(ctx: click.Context, name: str, password_stdin: bool) -> None:
    """Add a user; asks for the password twice unless --password-stdin."""
    if password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = run(ctx, lambda engine: engine.admin.add_user(name, password))
    if options(ctx).json:
        emit({"id": user.id, "username": user.username}, as_json=True)
    else:
        click.echo(f"added user {user.username} ({user.id})")


@users.command("list")
@common
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List users."""
    found = run(ctx, lambda engine: engine.admin.list_users())
    emit([_public(u) for u in found], as_json=options(ctx).json)


@users.command("disable")
@click.argument("name")
@common
@click.pass_context
def disable(ctx: click.Context, name: str) -> None:
    """Disable a user and end every session of theirs."""
    ended = run(ctx, lambda engine: engine.admin.disable_user(name))
    if options(ctx).json:
        emit({"username": name, "sessions_ended": len(ended)}, as_json=True)
    else:
        click.echo(f"disabled {name}; {len(ended)} session(s) ended")
