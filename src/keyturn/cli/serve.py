"""`keyturn serve`: run the HTTP server (uvicorn) on the configured database."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, cast

import click
import uvicorn

from keyturn.cli.runtime import common, settings_for
from keyturn.crypto.passwords import Passwords
from keyturn.observability.logs import configure_logging
from keyturn.observability.metrics import prepare_multiprocess_dir, remove_multiprocess_dir
from keyturn.service.demo import DemoSetup, origin_of, set_up_demo
from keyturn.settings import Settings
from keyturn.web.http_protocol import HttpLimits, OneWriteHttpToolsProtocol
from keyturn.wiring import SystemRandomness, migrate, open_engine

APP = "keyturn.web.app:app_from_environment"
DEMO_APP = "keyturn.web.app:demo_app_from_environment"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option(
    "--demo",
    is_flag=True,
    help="Seed a user `demo` (a new password, printed once) and the browser client "
    "`demo-web`, and serve the demo page at /.",
)
@click.option(
    "--ssl-certfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve HTTPS with this PEM certificate (else KEYTURN_SSL_CERTFILE); needs --ssl-keyfile.",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The certificate's PEM private key (else KEYTURN_SSL_KEYFILE).",
)
@common
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    workers: int,
    demo: bool,
    ssl_certfile: Path | None,
    ssl_keyfile: Path | None,
) -> None:
    """Run the server; creates or migrates the schema first."""
    tls: dict[str, Any] = {}
    if ssl_certfile is not None:
        tls["ssl_certfile"] = ssl_certfile
    if ssl_keyfile is not None:
        tls["ssl_keyfile"] = ssl_keyfile
    settings = settings_for(ctx, **tls)
    if demo and "issuer" not in settings.model_fields_set:
        # The page's origin must be the demo client's allowed origin, and its refresh
        # cookie is Secure: over plain http, browsers keep one only for a potentially
        # trustworthy origin such as localhost.
        scheme = "https" if settings.ssl_certfile else "http"
        settings = settings_for(ctx, issuer=f"{scheme}://localhost:{port}", **tls)
    configure_logging(settings)
    setup = prepared(settings, demo=demo)
    if setup is not None:
        banner(settings, setup)
    # Every worker process builds its settings from the environment: hand it ours.
    os.environ["KEYTURN_DATABASE_URL"] = settings.database_url
    if demo:
        os.environ["KEYTURN_ISSUER"] = settings.issuer
    scheme = "https" if settings.ssl_certfile else "http"
    click.echo(
        f"keyturn serving {settings.issuer} on {scheme}://{host}:{port} ({workers} worker(s))"
    )
    # Before any worker starts: their metrics go to files that every worker's scrape adds up.
    metrics_dir = prepare_multiprocess_dir(workers)
    trusted = settings.trusted_proxy_list
    protocol = functools.partial(
        OneWriteHttpToolsProtocol,
        limits=HttpLimits(
            max_header_bytes=settings.http_max_header_bytes,
            header_timeout=settings.http_header_timeout,
            idle_timeout=settings.http_idle_timeout,
        ),
    )
    try:
        uvicorn.run(
            DEMO_APP if demo else APP,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            # uvicorn's access log prints request lines, query strings included: a client
            # that puts a secret in the URL must not have it written down. keyturn writes
            # its own (`keyturn.access`), by route template.
            access_log=False,
            log_level="warning",
            # No handlers of uvicorn's own: its records go to keyturn's (JSON, redacted).
            log_config=None,
            # X-Forwarded-For and -Proto are believed from the configured proxies only
            # (H-08): from anyone else they are the client's word, and would let it pick
            # the address its limits and audit rows are kept under.
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted or None,
            server_header=False,
            ssl_certfile=settings.ssl_certfile,
            ssl_keyfile=settings.ssl_keyfile,
            # httptools, writing each response in one piece rather than two, with the
            # header, timeout and concurrency limits uvicorn's lacks (H-05).
            http=cast("type[asyncio.Protocol]", protocol),
            limit_concurrency=settings.http_max_concurrency,
        )
    finally:
        remove_multiprocess_dir(metrics_dir)


def prepared(settings: Settings, *, demo: bool) -> DemoSetup | None:
    """Migrate the schema, create missing signing keys and, for `--demo`, seed the demo,
    in a child process: the server process never loads the migration tooling (Alembic
    and SQLAlchemy, some 25 MB that would stay resident in a one-worker server)."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
        return child.submit(_prepare, settings, demo).result()


def _prepare(settings: Settings, demo: bool) -> DemoSetup | None:
    configure_logging(settings)
    migrate(settings)

    async def main() -> DemoSetup | None:
        engine = await open_engine(settings)  # opening the engine creates missing keys
        try:
            if not demo:
                return None
            return await set_up_demo(
                engine.store,
                engine.admin,
                Passwords(),
                engine.clock,
                SystemRandomness(),
                origin=origin_of(settings.issuer),
                # Never above the server's own lifetime, which registration refuses.
                access_token_ttl=min(settings.demo_access_token_ttl, settings.access_token_ttl),
            )
        finally:
            await engine.close()

    return asyncio.run(main())


def banner(settings: Settings, setup: DemoSetup) -> None:
    origin = origin_of(settings.issuer)
    ttl = setup.client.lifetimes.access_token_ttl or settings.access_token_ttl
    again = " (reset: the old one no longer works)" if setup.user_existed else ""
    click.echo()
    click.secho("keyturn demo", bold=True)
    click.echo(f"  open      {origin}/")
    click.echo(f"  username  {setup.username}")
    click.echo(f"  password  {setup.password}")
    click.echo(f"  A new password on every start{again}; it is shown only here.")
    click.echo(f"  The page signs in as client {setup.client.id}: access tokens of {ttl} s in")
    click.echo("  memory, the refresh token in an httpOnly cookie, rotated before expiry.")
    click.echo(f"  Open exactly {origin}: the client accepts that origin only, and the")
    click.echo("  Secure cookie needs https or localhost.")
    click.echo()
