"""A new deployment's first minutes: keyturn started as the README says on a database
it has just created, sessions opened by logins, then rotated under load.

    .venv/bin/python -m bench.fresh [--store postgres] [--workers 2] [--sessions 1000]
        [--concurrency 64] [--seconds 60] [--maintenance none|analyze|vacuum-analyze]

What it does, in order:

1. a new PostgreSQL schema (or a new SQLite file) with nothing in it;
2. `python -m keyturn serve --workers W`, which migrates it and serves (default logging,
   the shipped settings but for the rate limits below);
3. the public client `bench` and one user per ten sessions, through keyturn's admin
   service (what `keyturn clients add` and `keyturn users add` run);
4. `--sessions` logins at `POST /auth/login`, as an application opens them
   (`bench.load.logins`);
5. optionally (`--maintenance`) what an operator might run by hand, for comparison;
6. `--concurrency` refresh chains at `POST /oauth/token` for `--seconds`, with the
   rotations per second and the p99 of every `--slice` seconds, from the first
   request on (no warm-up is dropped: the first seconds are the point).

Settings that differ from a README deployment, and why: `KEYTURN_DB_SCHEMA` (a schema of
its own, dropped after; it sets the connections' `search_path` and nothing else),
`KEYTURN_LOGIN_REQUESTS_PER_MINUTE`, `KEYTURN_TOKEN_REQUESTS_PER_MINUTE`,
`KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE` (every
login and rotation comes from 127.0.0.1, which the shipped limits would refuse; the
counters are still kept and checked on every request).

Prints one line per slice and writes `bench/results/fresh-DATE-<label>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.compare.systems import KEYTURN, Spec, keyturn_database, keyturn_server
from bench.engine.preload import PG, SECRET
from bench.engine.report import machine, write_json
from bench.latency import percentile
from bench.load.http import Client
from bench.load.logins import CLIENT, log_in, register
from bench.load.shapes import Endpoint, Shape
from keyturn.settings import Settings


async def _pg(sql: str, schema: str | None = None) -> None:
    conn = await asyncpg.connect(PG, server_settings={"search_path": schema or "public"})
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _rotate(
    endpoint: Endpoint, tokens: list[str], concurrency: int, seconds: float
) -> list[tuple[int, int]]:
    """(finish, latency) in ns since the start, of every good rotation."""
    shape = Shape(endpoint)
    done: list[tuple[int, int]] = []
    errors: dict[str, int] = {}
    clients = [Client(endpoint.host, endpoint.port) for _ in range(concurrency)]
    start = time.perf_counter_ns()
    end = start + int(seconds * 1e9)
    spares = tokens[concurrency:]

    async def worker(client: Client, token: str) -> None:
        while (began := time.perf_counter_ns()) < end:
            response = await client.send(shape.request(token))
            finished = time.perf_counter_ns()
            outcome = shape.judge(response, token)
            if outcome.token is not None:
                done.append((finished - start, finished - began))
                token = outcome.token
                continue
            errors[outcome.error or "error"] = errors.get(outcome.error or "error", 0) + 1
            if outcome.dead:
                if not spares:
                    return
                token = spares.pop()

    try:
        await asyncio.gather(*(worker(c, t) for c, t in zip(clients, tokens, strict=False)))
    finally:
        for client in clients:
            client.close()
    if errors:
        print(f"# errors: {errors}", flush=True)
    return done


def _slices(done: list[tuple[int, int]], seconds: float, width: float) -> list[dict[str, Any]]:
    out = []
    edge = 0.0
    while edge < seconds - 1e-9:
        upper = min(edge + width, seconds)
        inside = sorted(lat for fin, lat in done if edge * 1e9 <= fin < upper * 1e9)
        out.append(
            {
                "from_s": round(edge, 1),
                "to_s": round(upper, 1),
                "rotations_per_second": round(len(inside) / (upper - edge), 1),
                "p50_ms": round(percentile(inside, 0.50) / 1e6, 2) if inside else None,
                "p99_ms": round(percentile(inside, 0.99) / 1e6, 2) if inside else None,
            }
        )
        edge = upper
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fresh", description=__doc__)
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--slice", type=float, default=5.0)
    parser.add_argument(
        "--maintenance", choices=("none", "analyze", "vacuum-analyze"), default="none"
    )
    parser.add_argument("--label", default="")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    label = args.label or f"{args.store}-{args.workers}w-{args.maintenance}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        keyturn_database(args.store, Path(tmp)) as db,
        keyturn_server(Spec(KEYTURN, args.store, args.workers), Path(tmp), db) as (_, base),
    ):
        settings = Settings(
            database_url=db["KEYTURN_DATABASE_URL"],
            db_schema=db.get("KEYTURN_DB_SCHEMA"),
            secret_key=SECRET,
        )
        users = asyncio.run(register(settings, args.sessions))
        began = time.perf_counter()
        tokens = asyncio.run(log_in(base, users, args.sessions))
        login_seconds = time.perf_counter() - began
        print(f"# {len(tokens)} logins in {login_seconds:.1f} s", flush=True)
        if args.maintenance != "none" and args.store == "postgres":
            sql = "VACUUM (ANALYZE)" if args.maintenance == "vacuum-analyze" else "ANALYZE"
            asyncio.run(_pg(sql, db["KEYTURN_DB_SCHEMA"]))
        elif args.maintenance != "none":
            subprocess.run(
                ["sqlite3", db["KEYTURN_DATABASE_URL"].removeprefix("sqlite:///"), "ANALYZE"],
                check=True,
            )
        endpoint = Endpoint(f"{base}/oauth/token", "oauth", CLIENT)
        done = asyncio.run(_rotate(endpoint, tokens, args.concurrency, args.seconds))
    slices = _slices(done, args.seconds, args.slice)
    for s in slices:
        print(
            f"{s['from_s']:>5.0f}–{s['to_s']:<4.0f}s "
            f"rotations/s={s['rotations_per_second']:8.1f} "
            f"p50={s['p50_ms']}ms p99={s['p99_ms']}ms",
            flush=True,
        )
    total = len(done) / args.seconds
    print(f"# {label}: {total:.1f} rotations/s over {args.seconds:.0f} s", flush=True)
    stamp = datetime.now(UTC)
    write_json(
        f"fresh-{stamp:%Y-%m-%d}-{label}.json",
        {
            "when": stamp.isoformat(timespec="seconds"),
            "machine": machine(),
            "command": "python -m bench.fresh " + " ".join(argv),
            "label": label,
            "settings": vars(args),
            "login_seconds": round(login_seconds, 1),
            "rotations_per_second": round(total, 1),
            "slices": slices,
        },
    )


if __name__ == "__main__":
    main(sys.argv[1:])
