"""Running one use case from the command line: settings, engine, and one-line errors."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from keyturn.core.errors import StoreUnavailable
from keyturn.service.engine import Engine
from keyturn.settings import Settings
from keyturn.wiring import open_engine, schema_problem

T = TypeVar("T")


@dataclass
class Options:
    """The options every command takes (`--db`, `--json`), set before or after it."""

    db: str | None = None
    json: bool = False


def options(ctx: click.Context) -> Options:
    found = ctx.find_object(Options)
    if found is None:
        found = ctx.ensure_object(Options)
    return found


def common(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add `--db` and `--json` to a command; they may also be given before it."""

    def remember_db(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        if value is not None:
            options(ctx).db = value

    def remember_json(ctx: click.Context, _: click.Parameter, value: bool) -> None:
        if value:
            options(ctx).json = True

    command = click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=remember_json,
        help="Machine-readable output.",
    )(command)
    return click.option(
        "--db",
        metavar="URL",
        expose_value=False,
        callback=remember_db,
        help="Database URL (else KEYTURN_DATABASE_URL).",
    )(command)


def settings_for(ctx: click.Context, **overrides: Any) -> Settings:
    chosen = options(ctx).db
    values: dict[str, Any] = dict(overrides)
    if chosen is not None:
        values["database_url"] = chosen
    try:
        return Settings(**values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise click.UsageError(f"invalid setting {where}: {first['msg']}") from None


def mask(url: str) -> str:
    """A database URL with any password hidden."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


def run(ctx: click.Context, use: Callable[[Engine], Awaitable[T]], **overrides: Any) -> T:
    """Open the engine on the settings, run `use`, close the engine."""
    settings = settings_for(ctx, **overrides)

    async def main() -> T:
        engine = await open_engine(settings)
        try:
            return await use(engine)
        finally:
            await engine.close()

    try:
        return asyncio.run(main())
    except StoreUnavailable:
        # A database that answers without keyturn's tables is not "unreachable": the
        # operator has one command to run, so name it.
        problem = schema_problem(settings)
        if problem is not None:
            raise click.ClickException(
                f"{problem} ({mask(settings.database_url)}): run keyturn migrate"
            ) from None
        raise


def environment_database() -> str:
    return os.environ.get("KEYTURN_DATABASE_URL", "sqlite:///keyturn.db")
