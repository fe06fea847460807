"""Each system of the comparison: how it is seeded, started on a loopback port and
stopped. Every one yields the endpoint to drive, its starting refresh tokens, the pid
to account CPU to, and the command it runs as."""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bench.compare.procs import answers, free_port, server
from bench.engine.preload import PG, SECRET, dispose, first_tokens, prepare
from bench.engine.report import ROOT
from bench.load.logins import log_in, register
from bench.load.shapes import Endpoint, ShapeName
from keyturn.settings import Settings
from keyturn.wiring import open_engine

PEERS = ROOT / "bench" / "peers"
DJANGO = PEERS / "django"
OIDC = PEERS / "oidc"
PEER_PYTHON = DJANGO / ".venv" / "bin" / "python"


@dataclass(frozen=True, slots=True)
class Spec:
    """One configuration: a system, its store, its worker processes."""

    system: str
    store: str
    workers: int

    @property
    def label(self) -> str:
        return f"{self.system} · {self.store} · {self.workers}w"


@dataclass(frozen=True, slots=True)
class Running:
    endpoint: Endpoint
    tokens: list[str]
    pid: int
    command: str


KEYTURN = "keyturn"
DOT = "django-oauth-toolkit"
SIMPLEJWT = "simplejwt"
OIDC_PROVIDER = "oidc-provider"


def _pg_admin(sql: str) -> None:
    subprocess.run(
        [
            "psql",
            PG,
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"SET client_min_messages = warning; {sql}",
        ],
        check=True,
    )


@contextmanager
def _pg_schema(prefix: str) -> Iterator[str]:
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _pg_admin(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        _pg_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextmanager
def keyturn(spec: Spec, n: int, folder: Path, *, sessions: int | None = None) -> Iterator[Running]:
    """keyturn as the README deploys it: `keyturn serve` on a new database, which it
    migrates itself, with the shipped settings but for the rate limits (every request
    comes from one address). Its `n` sessions are opened by logins at `/auth/login`
    (`bench.load.logins`), in random order for the chains. With `sessions` (the scale
    line: 10^5 and more, which logins would take hours to open) the database is bulk
    loaded first instead (`bench.engine.preload`, no maintenance after it) and `n` of
    its sessions' tokens are derived, not read back."""
    if sessions is not None:
        yield from _keyturn_preloaded(spec, n, folder, sessions)
        return
    with (
        keyturn_database(spec.store, folder) as database,
        keyturn_server(spec, folder, database) as (running, base),
    ):
        settings = Settings(
            database_url=database["KEYTURN_DATABASE_URL"],
            db_schema=database.get("KEYTURN_DB_SCHEMA"),
            secret_key=SECRET,
        )
        users = asyncio.run(register(settings, n))
        tokens = asyncio.run(log_in(base, users, n))
        random.Random(n).shuffle(tokens)
        yield replace(running, tokens=tokens)


@contextmanager
def keyturn_database(store: str, folder: Path) -> Iterator[dict[str, str]]:
    """A new, empty database for keyturn: a schema of its own, or a new SQLite file."""
    if store == "sqlite":
        db = folder / f"keyturn-{uuid.uuid4().hex[:6]}.db"
        yield {"KEYTURN_DATABASE_URL": f"sqlite:///{db}"}
        return
    with _pg_schema("bench_keyturn") as schema:
        yield {"KEYTURN_DATABASE_URL": PG, "KEYTURN_DB_SCHEMA": schema}


@contextmanager
def keyturn_server(
    spec: Spec, folder: Path, database: dict[str, str]
) -> Iterator[tuple[Running, str]]:
    """`keyturn serve` on `database` (which it migrates), as the README starts it: the
    running server (no tokens yet) and its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **database,
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_ISSUER": base,
        # The only settings changed: the load and the logins all come from 127.0.0.1.
        # The limiter still counts and checks every request.
        "KEYTURN_LOGIN_REQUESTS_PER_MINUTE": "100000000",
        "KEYTURN_TOKEN_REQUESTS_PER_MINUTE": "100000000",
        "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": "100000000",
    }
    command = [sys.executable, "-m", "keyturn", "serve"]
    command += ["--port", str(port), "--workers", str(spec.workers)]
    with server(
        command,
        env=env,
        cwd=ROOT,
        log=folder / f"keyturn-{spec.store}-{spec.workers}.log",
        ready=answers("127.0.0.1", port, "/healthz"),
    ) as proc:
        yield (
            Running(
                Endpoint(f"{base}/oauth/token", "oauth", "bench"),
                [],
                proc.pid,
                "python -m keyturn serve --workers " + str(spec.workers),
            ),
            base,
        )


def _keyturn_preloaded(spec: Spec, n: int, folder: Path, sessions: int) -> Iterator[Running]:
    pool = Settings.model_fields["db_pool_size"].default
    target = prepare(spec.store, sessions, folder, pool, settle=False)
    try:

        async def derive() -> list[str]:
            engine = await open_engine(target.settings(), schema=target.schema)
            try:
                chosen = random.Random(sessions).sample(range(1, sessions + 1), n)
                return await first_tokens(engine, target, chosen)
            finally:
                await engine.close()

        tokens = asyncio.run(derive())
        database = {"KEYTURN_DATABASE_URL": target.url}
        if target.schema:
            database["KEYTURN_DB_SCHEMA"] = target.schema
        with keyturn_server(spec, folder, database) as (running, _):
            yield replace(running, tokens=tokens)
    finally:
        dispose(target)


def _django(spec: Spec, n: int, folder: Path, shape: ShapeName) -> Iterator[Running]:
    which = "dot" if shape == "oauth" else "simplejwt"

    def run(schema: str | None) -> Iterator[Running]:
        env = {"DJANGO_SETTINGS_MODULE": "peer.settings", "PYTHONPATH": str(DJANGO)}
        if schema:
            env |= {"PEER_DATABASE": PG, "PEER_DB_SCHEMA": schema}
        else:
            env["PEER_DATABASE"] = f"sqlite:///{folder / f'{which}-{uuid.uuid4().hex[:6]}.sqlite3'}"
        log = folder / f"{which}-{spec.store}-{spec.workers}.log"
        tokens_file = folder / f"{which}-tokens.txt"
        with log.open("ab") as out:
            for step in (
                [str(PEER_PYTHON), "-m", "django", "migrate", "--noinput", "-v", "0"],
                [str(PEER_PYTHON), "-m", "peer.seed", which, str(n), str(tokens_file)],
            ):
                subprocess.run(
                    step, cwd=DJANGO, env={**os.environ, **env}, stdout=out, stderr=out, check=True
                )
        tokens = tokens_file.read_text().split()
        port = free_port()
        gunicorn = [str(DJANGO / ".venv" / "bin" / "gunicorn"), "--workers", str(spec.workers)]
        gunicorn += ["--bind", f"127.0.0.1:{port}", "--no-control-socket", "peer.wsgi:application"]
        path = "/o/token/" if shape == "oauth" else "/api/token/refresh/"
        with server(
            gunicorn, env=env, cwd=DJANGO, log=log, ready=answers("127.0.0.1", port, path)
        ) as proc:
            yield Running(
                Endpoint(
                    f"http://127.0.0.1:{port}{path}", shape, "bench" if which == "dot" else None
                ),
                tokens,
                proc.pid,
                f"gunicorn --workers {spec.workers} peer.wsgi:application (sync workers)",
            )

    if spec.store == "postgres":
        with _pg_schema(f"bench_{which}") as schema:
            yield from run(schema)
    else:
        yield from run(None)


@contextmanager
def django_oauth_toolkit(spec: Spec, n: int, folder: Path) -> Iterator[Running]:
    yield from _django(spec, n, folder, "oauth")


@contextmanager
def simplejwt(spec: Spec, n: int, folder: Path) -> Iterator[Running]:
    yield from _django(spec, n, folder, "simplejwt")


@contextmanager
def oidc_provider(spec: Spec, n: int, folder: Path) -> Iterator[Running]:
    port = free_port()
    tokens_file = folder / f"oidc-{spec.store}-tokens.txt"
    command = ["node", "server.mjs", "--port", str(port), "--tokens", str(n)]
    command += ["--out", str(tokens_file), "--store", spec.store, "--workers", str(spec.workers)]

    def run(schema: str | None) -> Iterator[Running]:
        full = [*command, "--pg", PG, "--schema", schema] if schema else command
        with server(
            full,
            env={},
            cwd=OIDC,
            log=folder / f"oidc-{spec.store}-{spec.workers}.log",
            ready=lambda: tokens_file.exists() and answers("127.0.0.1", port, "/token", "POST")(),
            timeout=600,
        ) as proc:
            yield Running(
                Endpoint(f"http://127.0.0.1:{port}/token", "oauth", "bench"),
                tokens_file.read_text().split(),
                proc.pid,
                shlex.join(
                    [
                        "node",
                        "bench/peers/oidc/server.mjs",
                        "--store",
                        spec.store,
                        "--workers",
                        str(spec.workers),
                    ]
                ),
            )

    if spec.store == "postgres":
        with _pg_schema("bench_oidc") as schema:
            yield from run(schema)
    else:
        yield from run(None)


LAUNCHERS = {
    KEYTURN: keyturn,
    DOT: django_oauth_toolkit,
    SIMPLEJWT: simplejwt,
    OIDC_PROVIDER: oidc_provider,
}

FULL = [
    Spec(KEYTURN, "sqlite", 1),
    Spec(KEYTURN, "sqlite", 2),
    Spec(KEYTURN, "postgres", 1),
    Spec(KEYTURN, "postgres", 2),
    Spec(DOT, "sqlite", 1),
    Spec(DOT, "sqlite", 2),
    Spec(DOT, "postgres", 1),
    Spec(DOT, "postgres", 2),
    Spec(SIMPLEJWT, "sqlite", 1),
    Spec(SIMPLEJWT, "sqlite", 2),
    Spec(SIMPLEJWT, "postgres", 1),
    Spec(SIMPLEJWT, "postgres", 2),
    Spec(OIDC_PROVIDER, "memory", 1),
    Spec(OIDC_PROVIDER, "postgres", 1),
    Spec(OIDC_PROVIDER, "postgres", 2),
]
