"""`keyturn clients`: add, list, disable."""

from __future__ import annotations

import click

from keyturn.cli.output import emit
from keyturn.cli.runtime import common, options, run
from keyturn.core.models import Client, ClientType, Delivery, GrantType, LifetimeOverrides
from keyturn.core.scopes import parse_scope


def _public(client: Client) -> dict[str, object]:
    """A client as shown: never its secret hash."""
    return {
        "client_id": client.id,
        "type": client.type,
        "grant_types": client.grant_types,
        "scope": client.scope,
        "delivery": client.delivery,
        "redirect_uris": client.redirect_uris,
        "audience": client.audience,
        "allowed_origins": client.allowed_origins,
        "can_introspect": client.can_introspect,
        "enabled": client.enabled,
        "created_at": client.created_at,
    }


@click.group()
def clients() -> None:
    """Applications registered with keyturn."""


@clients.command("add")
@click.argument("client_id")
@click.option("--type", "kind", type=click.Choice([t.value for t in ClientType]), required=True)
@click.option("--redirect-uri", multiple=True, help="An exact redirect URI; repeat for more.")
@click.option(
    "--grant",
    multiple=True,
    type=click.Choice([g.value for g in GrantType]),
    help="A grant type; repeat for more ('password' = first-party login).",
)
@click.option("--scope", multiple=True, help="Scopes the client may ask for; space-separated.")
@click.option("--delivery", type=click.Choice([d.value for d in Delivery]), default="body")
@click.option("--audience", multiple=True, help="`aud` of its access tokens; repeat for more.")
@click.option("--origin", multiple=True, help="Browser origin allowed to refresh by cookie.")
@click.option("--introspect", is_flag=True, help="May call introspection and the revocation feed.")
@click.option("--access-token-ttl", type=click.IntRange(min=1))
@click.option("--session-idle-ttl", type=click.IntRange(min=1))
@click.option("--session-max-ttl", type=click.IntRange(min=1))
@common
@click.pass_context
def add(
    ctx: click.Context,
    client_id: str,
    kind: str,
    redirect_uri: tuple[str, ...],
    grant: tuple[str, ...],
    scope: tuple[str, ...],
    delivery: str,
    audience: tuple[str, ...],
    origin: tuple[str, ...],
    introspect: bool,
    access_token_ttl: int | None,
    session_idle_ttl: int | None,
    session_max_ttl: int | None,
) -> None:
    """Register a client. A confidential client's secret is printed once."""
    scopes = parse_scope(" ".join(scope)) or frozenset()
    created = run(
        ctx,
        lambda engine: engine.admin.add_client(
            client_id,
            ClientType(kind),
            redirect_uris=redirect_uri,
            grant_types=[GrantType(g) for g in grant],
            scope=scopes,
            delivery=Delivery(delivery),
            audience=audience,
            allowed_origins=origin,
            can_introspect=introspect,
            lifetimes=LifetimeOverrides(access_token_ttl, session_idle_ttl, session_max_ttl),
        ),
    )
    if options(ctx).json:
        emit({"client_id": created.client.id, "client_secret": created.secret}, as_json=True)
        return
    click.echo(f"added {kind} client {created.client.id}")
    if created.secret:
        click.echo(f"client secret: {created.secret}")
        click.echo("Store it now: it is kept only as a hash and will not be shown again.")


@clients.command("list")
@common
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List clients (never their secrets)."""
    found = run(ctx, lambda engine: engine.admin.list_clients())
    emit(
        [_public(c) for c in found],
        as_json=options(ctx).json,
        columns=["client_id", "type", "grant_types", "scope", "delivery", "enabled"],
    )


@clients.command("disable")
@click.argument("client_id")
@common
@click.pass_context
def disable(ctx: click.Context, client_id: str) -> None:
    """Disable a client and end its sessions."""
    ended = run(ctx, lambda engine: engine.admin.disable_client(client_id))
    if options(ctx).json:
        emit({"client_id": client_id, "sessions_ended": len(ended)}, as_json=True)
    else:
        click.echo(f"disabled {client_id}; {len(ended)} session(s) ended")
