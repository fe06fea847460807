"""What keyturn's web layer costs a rotation: CPU per `/oauth/token` refresh, in process,
with no sockets and no HTTP server.

    .venv/bin/python -m bench.engine.web            # SQLite and PostgreSQL, docs and JSON
    .venv/bin/python -m bench.engine.web --no-write

Three ways to rotate the same chains, 16 concurrent callers on one event loop (uvloop),
in alternating rounds:

- `engine`: `Refresher.refresh_for`, what `/oauth/token` calls (store, rules, signing);
- `endpoint, answer canned`: that endpoint with the engine's answer made in advance
  (its `Refresher` returns one fixed rotation): the request handling alone;
- `endpoint`: keyturn's `/oauth/token` endpoint called with a `Request`, its response
  sent: what the request adds (form, client credentials, rate limit, context,
  response), without Starlette's routing and exception layers;
- `app, no middleware`: the ASGI application called directly with a form-encoded
  request, without keyturn's middlewares: Starlette's routing and exception layers,
  keyturn's endpoint (form, client credentials, rate limit, response);
- `app`: the whole ASGI application as `keyturn serve` runs it: the access log (JSON
  lines to a file), the metrics, the security headers and CORS on top.

The CPU is this process's (`time.process_time`): the database's own work is not in
it, the store client's is. The differences between the rows are what each layer costs;
uvicorn's parsing and the socket calls come on top (`bench.compare.profile`).
"""

from __future__ import annotations

import os
import tempfile

# Metrics as `keyturn serve` keeps them, in files its workers share (prometheus-client's
# multiprocess mode): prometheus-client reads this when it is first imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="keyturn-web-"))

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlencode

import uvloop
from starlette.requests import Request

from bench.engine.preload import CLIENT, Target, dispose, first_tokens, prepare
from bench.engine.report import machine, machine_line, replace_section, table, write_json
from keyturn.observability.logs import configure_logging
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from keyturn.service.engine import Engine
from keyturn.settings import Settings
from keyturn.web import oauth_token
from keyturn.web.app import create_app, endpoint
from keyturn.wiring import open_engine

SESSIONS = 10_000
CALLERS = 16
CHAINS = 64
CANNED = "endpoint, answer canned"
WAYS = ("engine", CANNED, "endpoint", "app, no middleware", "app")

Rotate = Callable[[str], Awaitable[str]]


def _endpoint_app(engine: Engine) -> Any:
    """An ASGI callable running only keyturn's `/oauth/token` endpoint: the `Request`,
    the handler with its error mapping, the response; no router, no middleware."""
    run = endpoint(oauth_token.token)
    holder = SimpleNamespace(state=SimpleNamespace(engine=engine))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["app"] = holder
        response = await run(Request(scope, receive))
        await response(scope, receive, send)

    return app


async def _ready(value: Any) -> Any:
    return value


def _asgi_rotation(app: Any) -> Rotate:
    """Rotate `token` through the ASGI application `app`; the successor."""

    form = urlencode({"grant_type": "refresh_token", "client_id": CLIENT}).encode()

    async def rotate(token: str) -> str:
        # A refresh token is URL-safe text (`kt_rt_` and base64url): nothing to escape.
        body = form + b"&refresh_token=" + token.encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/oauth/token",
            "raw_path": b"/oauth/token",
            "root_path": "",
            "query_string": b"",
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"content-length", str(len(body)).encode()),
                (b"user-agent", b"bench.engine.web"),
            ],
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"{sent[0]['status']}: {sent[-1].get('body')!r}")
        successor: str = json.loads(sent[-1]["body"])["refresh_token"]
        return successor

    return rotate


async def _round(
    engine: Engine, settings: Settings, way: str, chains: list[str], seconds: float
) -> float:
    """Rotate the chains (updated in place) `way` for `seconds`; CPU µs per rotation."""
    rotate: Rotate
    if way == "engine":
        credentials = ClientCredentials(CLIENT, None, AuthMethod.NONE)

        async def through_engine(token: str) -> str:
            issued = await engine.refresher.refresh_for(credentials, token)
            assert issued.refresh_token is not None
            return issued.refresh_token

        rotate = through_engine
    elif way == CANNED:
        canned = await engine.refresher.refresh_for(
            ClientCredentials(CLIENT, None, AuthMethod.NONE), chains[0]
        )
        assert canned.refresh_token is not None
        chains[0] = canned.refresh_token
        answer = SimpleNamespace(refresh_for=lambda *_, **__: _ready(canned))
        rotate = _asgi_rotation(_endpoint_app(replace(engine, refresher=cast(Any, answer))))
        chains = [canned.refresh_token] * len(chains)  # a copy: the real chains stay as they are
    elif way == "endpoint":
        rotate = _asgi_rotation(_endpoint_app(engine))
    else:
        app = create_app(settings, engine)
        app.state.engine = engine
        if way == "app, no middleware":
            app.user_middleware = []
        rotate = _asgi_rotation(app)
    count = 0
    stop = time.monotonic() + seconds

    async def caller(k: int) -> None:
        nonlocal count
        mine = range(k, len(chains), CALLERS)
        while time.monotonic() < stop:
            for j in mine:
                chains[j] = await rotate(chains[j])
                count += 1

    began = time.process_time()
    await asyncio.gather(*(caller(k) for k in range(CALLERS)))
    return 1e6 * (time.process_time() - began) / count


async def measure(target: Target, rounds: int, seconds: float) -> dict[str, Any]:
    settings = target.settings(
        token_requests_per_minute=10**9, public_client_requests_per_minute=10**9
    )
    engine = await open_engine(settings, schema=target.schema)
    try:
        rng = random.Random(11)
        chains = await first_tokens(
            engine, target, rng.sample(range(1, target.sessions + 1), CHAINS)
        )
        await _round(engine, settings, "app", chains, 1.0)  # warm-up: every path once
        samples: dict[str, list[float]] = {way: [] for way in WAYS}
        for _ in range(rounds):
            for way in WAYS:
                samples[way].append(await _round(engine, settings, way, chains, seconds))
    finally:
        await engine.close()
    return {
        way: {"median_us": statistics.median(values), "rounds_us": [round(v, 1) for v in values]}
        for way, values in samples.items()
    }


def section(
    facts: dict[str, str], figures: dict[str, dict[str, Any]], rounds: int, seconds: float
) -> str:
    rows = []
    for way in WAYS:
        row = [way]
        for store in ("sqlite", "postgres"):
            cost = figures[store][way]["median_us"]
            base = figures[store]["engine"]["median_us"]
            row += [f"{cost:,.0f}", "–" if way in ("engine", CANNED) else f"+{cost - base:,.0f}"]
        rows.append(row)
    return "\n".join(
        [
            "## What the web layer costs a rotation",
            "",
            f"CPU of this process per `/oauth/token` refresh, in process, no sockets and no "
            f"HTTP server: {CALLERS} callers on one event loop rotate {CHAINS} chains of "
            f"{SESSIONS:,} preloaded sessions, {rounds} alternating rounds of {seconds:g} s "
            "per row (median). `engine` is `Refresher.refresh_for` alone (store client, "
            "rules, signing); `endpoint` keyturn's `/oauth/token` endpoint called with a "
            "form-encoded `Request` (form, client credentials, rate limit, request context, "
            "response), without Starlette, and `endpoint, answer canned` the same with the "
            "engine's answer made in advance (the request handling alone, not over the "
            "engine); `app, no middleware` the ASGI application "
            "without keyturn's middlewares (adds Starlette's routing and exception "
            "layers); `app` the whole application as served (with the JSON access log "
            "written to a file, the metrics in prometheus-client's multiprocess files, the "
            "security headers and CORS). The database's "
            "own CPU is not in it; uvicorn and the socket calls come on top. "
            "`.venv/bin/python -m bench.engine.web`",
            "",
            machine_line(facts),
            "",
            *table(
                ["way", "SQLite µs", "over the engine", "PostgreSQL µs", "over the engine"],
                "lrrrr",
                rows,
            ),
        ]
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine.web", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    figures: dict[str, dict[str, Any]] = {}
    pool = Settings.model_fields["db_pool_size"].default
    with tempfile.TemporaryDirectory(prefix="keyturn-web-") as folder:
        # The access log goes where a server's stderr would: a file.
        log = (Path(folder) / "stderr.log").open("w")
        console, sys.stderr = sys.stderr, log
        try:
            for store in ("sqlite", "postgres"):
                target = prepare(store, SESSIONS, Path(folder), pool)
                try:
                    configure_logging(target.settings())
                    figures[store] = uvloop.run(measure(target, args.rounds, args.seconds))
                finally:
                    dispose(target)
                print(
                    f"{store}: "
                    + ", ".join(f"{w} {v['median_us']:.0f} µs" for w, v in figures[store].items()),
                    file=console,
                    flush=True,
                )
        finally:
            sys.stderr = console
            logging.shutdown()
            log.close()
    facts = machine()
    body = section(facts, figures, args.rounds, args.seconds)
    print(body)
    if not args.no_write:
        write_json(f"web-{facts['date']}.json", {"machine": facts, "figures": figures})
        replace_section("web", body)


if __name__ == "__main__":
    main(sys.argv[1:])
