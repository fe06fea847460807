"""`keyturn serve`: run the HTTP server (uvicorn) on the configured database."""

from __future__ import annotations

import os

import click
import uvicorn

from keyturn.cli.runtime import common, run, settings_for
from keyturn.core.models import StoredKey
from keyturn.wiring import Engine, migrate


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@common
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int) -> None:
    """Run the server; creates or migrates the schema first."""
    settings = settings_for(ctx)
    migrate(settings)

    async def keys(engine: Engine) -> list[StoredKey]:
        return await engine.admin.list_keys()  # opening the engine creates missing keys

    run(ctx, keys)
    # Every worker process builds its settings from the environment: hand it ours.
    os.environ["KEYTURN_DATABASE_URL"] = settings.database_url
    click.echo(f"keyturn serving {settings.issuer} on http://{host}:{port} ({workers} worker(s))")
    uvicorn.run(
        "keyturn.web.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # uvicorn's access log prints request lines, query strings included: a client
        # that puts a secret in the URL must not have it written down.
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
    )
