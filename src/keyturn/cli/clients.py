"""`keyturn clients`: add, list, update, disable."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from keyturn.cli.output import emit
from keyturn.cli.runtime import common, options, run
from keyturn.core.models import Client, ClientType, Delivery, GrantType, LifetimeOverrides
from keyturn.core.policy import (
    ClientKind,
    DpopMode,
    NoLimit,
    ReplayBudget,
    RotationSettings,
    format_budget,
    format_window,
    parse_window,
)
from keyturn.core.scopes import parse_scope


def _window(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> int | NoLimit | None:
    try:
        return None if value is None else parse_window(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _budget(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> ReplayBudget | NoLimit | None:
    try:
        return None if value is None else ReplayBudget.parse(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


_ROTATION_PARAMETERS = (
    "client_kind", "retry_window", "replay_budget", "rotate", "same_key_generations", "dpop",
)  # fmt: skip


def rotation_options(command: Callable[..., None]) -> Callable[..., None]:
    """The rotation-policy options shared by `clients add` and `clients update`: the
    command receives them as one `rotation: RotationSettings`."""

    @functools.wraps(command)
    def with_rotation(*args: Any, **kwargs: Any) -> None:
        chosen = {name: kwargs.pop(name) for name in _ROTATION_PARAMETERS}
        command(*args, rotation=_rotation(**chosen), **kwargs)

    decorated: Callable[..., None] = with_rotation
    for option in reversed(
        [
            click.option(
                "--kind",
                "client_kind",
                type=click.Choice([k.value for k in ClientKind]),
                help="Preset rotation policy (docs/rotation-policies.md).",
            ),
            click.option(
                "--retry-window",
                callback=_window,
                help="How long a rotated-out token may be retried: 600, 10m, 1h or unbounded.",
            ),
            click.option(
                "--replay-budget",
                callback=_budget,
                help="At most N replayed generations of the last M (N/M, e.g. 6/16), or off.",
            ),
            click.option(
                "--rotate/--no-rotate",
                default=None,
                help="Whether refresh tokens rotate (--no-rotate: confidential services).",
            ),
            click.option(
                "--same-key-generations",
                type=click.IntRange(min=0, max=62),
                help="How far back a DPoP-bound session's own key may present a stale token.",
            ),
            click.option(
                "--dpop",
                type=click.Choice([m.value for m in DpopMode]),
                help="DPoP proofs (RFC 9449) on token requests: required, optional "
                "(the default: bound tokens with a proof, bearer without) or off (refused).",
            ),
        ]
    ):
        decorated = option(decorated)
    return decorated


def _rotation(
    client_kind: str | None,
    retry_window: int | NoLimit | None,
    replay_budget: ReplayBudget | NoLimit | None,
    rotate: bool | None,
    same_key_generations: int | None,
    dpop: str | None,
) -> RotationSettings:
    return RotationSettings(
        kind=ClientKind(client_kind) if client_kind else None,
        retry_window=retry_window,
        replay_budget=replay_budget,
        rotate=rotate,
        same_key_generations=same_key_generations,
        dpop=DpopMode(dpop) if dpop else None,
    )


def _public(client: Client) -> dict[str, object]:
    """A client as shown: never its secret hash."""
    window, budget = client.rotation.retry_window, client.rotation.replay_budget
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
        "kind": client.rotation.kind,
        "retry_window": None if window is None else format_window(window),
        "replay_budget": None if budget is None else format_budget(budget),
        "rotate": client.rotation.rotate,
        "dpop": client.rotation.dpop_mode,
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
@click.option(
    "--origin",
    multiple=True,
    help="Browser origin allowed to refresh by cookie: https://host[:port] as a browser "
    "sends it (http only on localhost, 127.0.0.1, [::1]); never null or *.",
)
@click.option(
    "--introspect",
    is_flag=True,
    help="May call introspection and the revocation feed (confidential clients only).",
)
@click.option(
    "--access-token-ttl",
    type=click.IntRange(min=1),
    help="Seconds its access tokens live; at most the server's KEYTURN_ACCESS_TOKEN_TTL.",
)
@click.option("--session-idle-ttl", type=click.IntRange(min=1))
@click.option("--session-max-ttl", type=click.IntRange(min=1))
@rotation_options
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
    rotation: RotationSettings,
) -> None:
    """Register a client. A confidential client's secret is printed once. CLIENT_ID is
    not a UUID: user ids are, and a client's own tokens carry its id as their sub."""
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
            rotation=rotation,
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


@clients.command("update")
@click.argument("client_id")
@rotation_options
@common
@click.pass_context
def update(
    ctx: click.Context,
    client_id: str,
    rotation: RotationSettings,
) -> None:
    """Change a client's rotation policy and DPoP mode; the options not given keep
    their values."""
    updated = run(ctx, lambda engine: engine.admin.update_rotation(client_id, rotation))
    emit(_public(updated), as_json=options(ctx).json)


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
