"""`keyturn migrate`, `keyturn purge`, `keyturn audit`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click

from keyturn.cli.output import emit, plain
from keyturn.cli.runtime import common, options, run, settings_for
from keyturn.core.models import StoredKey
from keyturn.service.engine import Engine
from keyturn.wiring import migrate as migrate_schema

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """`2026-11-22`, `2026-11-22T10:00:00Z`, or a duration back from now: `10m`, `7d`."""
    relative = _RELATIVE.match(text)
    if relative:
        return now - timedelta(seconds=int(relative[1]) * _UNITS[relative[2]])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("use an ISO-8601 date or time, or 10m, 2h, 7d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command()
@common
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade the schema, and create the first keys."""
    migrate_schema(settings_for(ctx))

    async def keys_of(engine: Engine) -> list[StoredKey]:
        return await engine.admin.list_keys()  # opening the engine created any missing keys

    found = run(ctx, keys_of)
    if options(ctx).json:
        emit({"migrated": True, "keys": len(found)}, as_json=True)
    else:
        click.echo(f"schema is up to date; {len(found)} key(s) in place")


@click.command()
@common
@click.pass_context
def purge(ctx: click.Context) -> None:
    """Delete ended sessions, expired authorization codes and audit rows past their
    retention (KEYTURN_PURGE_RETENTION, KEYTURN_AUDIT_RETENTION)."""
    deleted = run(ctx, lambda engine: engine.admin.purge())
    if options(ctx).json:
        emit({"deleted": deleted}, as_json=True)
    else:
        click.echo(f"deleted {deleted} row(s): ended sessions, expired codes, old audit rows")


@click.command()
@click.option("--type", "kind", help="Only events of this type.")
@click.option("--since", help="From this time: ISO-8601, or 10m, 2h, 7d ago.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000)
@common
@click.pass_context
def audit(ctx: click.Context, kind: str | None, since: str | None, limit: int) -> None:
    """The audit trail of security events, oldest first."""
    start = parse_since(since, datetime.now(UTC)) if since else None
    found = run(ctx, lambda engine: engine.admin.audit(type=kind, since=start, limit=limit))
    emit(
        [{"id": r.id, **_flat(r.event)} for r in found],
        as_json=options(ctx).json,
        columns=["at", "type", "user_id", "client_id", "session_id", "reason"],
    )


def _flat(event: object) -> dict[str, object]:
    flat: dict[str, object] = plain(event)
    return flat
