"""`keyturn keys`: list and rotate."""

from __future__ import annotations

import click

from keyturn.cli.output import emit
from keyturn.cli.runtime import common, options, run
from keyturn.core.models import KeyUse, StoredKey


def _public(key: StoredKey) -> dict[str, object]:
    """A key as shown: never its private half."""
    return {
        "kid": key.kid,
        "use": key.use,
        "alg": key.alg,
        "state": key.state,
        "created_at": key.created_at,
        "activated_at": key.activated_at,
        "retired_at": key.retired_at,
        "publish_until": key.publish_until,
    }


@click.group()
def keys() -> None:
    """Signing keys and refresh-token MAC keys."""


@keys.command("list")
@common
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List keys with their state: next, active, retired."""
    found = run(ctx, lambda engine: engine.admin.list_keys())
    emit([_public(k) for k in found], as_json=options(ctx).json)


@keys.command("rotate")
@click.option("--use", type=click.Choice([u.value for u in KeyUse]), default="sig")
@common
@click.pass_context
def rotate(ctx: click.Context, use: str) -> None:
    """Retire the active key, activate the next one, create a new next one."""
    changed = run(ctx, lambda engine: engine.admin.rotate_keys(KeyUse(use)))
    emit([_public(k) for k in changed], as_json=options(ctx).json)
