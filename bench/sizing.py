"""What an operator needs to size a keyturn deployment: CPU per request of each grant,
PostgreSQL's work per rotation, what a large sessions table costs, and how the rate
grows with worker processes.

    .venv/bin/python -m bench.sizing                    # everything (10^7 sessions: hours)
    .venv/bin/python -m bench.sizing --only cpu,pgwork  # some sections
    .venv/bin/python -m bench.sizing --seconds 2 --big-sessions 20000 --processes 1,2 \
        --tokens 200 --out /tmp/sizing                  # a short run of everything

keyturn runs as the README deploys it (`bench.compare.systems.keyturn_server`): `python
-m keyturn serve --workers W` on a new database it migrates itself, sessions opened by
password logins at `POST /auth/login` (`bench.load.logins`). Settings that differ from a
README deployment, and why: `KEYTURN_DB_SCHEMA` (a PostgreSQL schema of its own, dropped
after), and the three rate limits `KEYTURN_LOGIN_REQUESTS_PER_MINUTE`,
`KEYTURN_TOKEN_REQUESTS_PER_MINUTE`, `KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE` (every
request comes from 127.0.0.1; the limiter still counts and checks each one). Every
measured line first waits for the machine to be quiet (`bench.engine.quiet`) and records
how busy it was (`busy_before`).

Sections (`--only`, all by default):

- `cpu`: per store (`--stores`), one keyturn worker (`--workers`): refresh-token
  rotations (`bench.load.drive`, `--concurrency` chains), password logins (Argon2id at
  keyturn's shipped cost, `--login-concurrency`) and client-credentials grants of a
  confidential client (HTTP Basic, `--cc-concurrency`), the last two driven by
  `bench.load.grants` from this process. For each: the rate, keyturn's CPU (its process
  tree, `bench.compare.procs.Window`) and the rate per keyturn CPU-second; on
  PostgreSQL also the database's CPU (the postmaster's process tree) and the database
  vCPU each 1,000 requests per second take. On SQLite the database runs inside
  keyturn's processes and its CPU is part of keyturn's.
- `pgwork`: PostgreSQL's own counters over a rotation line, with one and two workers
  (`--pgwork-workers`), divided by the rotations done: `pg_stat_wal`, `pg_stat_database`
  of the test database, `pg_stat_user_tables` of keyturn's schema, and the statements
  `pg_stat_statements` counted, when it is loaded. The warm-up is a run of its own and
  the counters are read `STATS_SETTLE_SECONDS` after it and after the measured run, once
  every backend has handed over what it counted.
- `big`: `--big-sessions` live sessions bulk loaded on PostgreSQL
  (`bench.engine.preload.prepare`, no maintenance after it), the disk each takes,
  rotations on it with one and two workers (`--big-workers`), one user's session list
  and the full list as `keyturn sessions list` runs them, and `keyturn purge` after one
  SQL `UPDATE` ended every k-th session (`--big-ended` of them) eight days ago.
- `scale`: rotations on PostgreSQL with N worker processes (`--processes`), each
  server with `--tokens` sessions opened by logins.
- `pgbench`: PostgreSQL's single-row commit rate on this machine
  (`bench.compare.limits.pgbench`), which bounds any system committing once a request.

PostgreSQL's CPU and counters are those of the whole server (and, for `pg_stat_wal`,
the whole cluster): work another client does in the same window is counted too, which
the quiet wait before each line is there to prevent. The load generators share the
machine with keyturn and PostgreSQL; their CPU is not keyturn's (other processes) and
is recorded as `generator_cpu_percent`.

Prints one line per measurement and writes `OUT/sizing-<date>.json` after each section.
Writes no docs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import random
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import argon2
import asyncpg

from bench.compare.__main__ import postgres_settings, versions
from bench.compare.limits import pgbench
from bench.compare.procs import Window, cpu_seconds, tree_cpu_seconds
from bench.compare.systems import KEYTURN, Spec, keyturn, keyturn_database, keyturn_server
from bench.engine.preload import PG, SECRET, Target, dispose, first_tokens, prepare
from bench.engine.quiet import wait_for_quiet
from bench.engine.report import RESULTS, ROOT, int_list, machine
from bench.load.drive import LoadResult, run_load
from bench.load.grants import GrantResult, client_credentials, logins, run_grants
from bench.load.logins import SESSIONS_PER_USER, log_in, register
from bench.load.shapes import Endpoint
from keyturn.core.models import ClientType, GrantType, RevocationReason
from keyturn.crypto.passwords import Passwords
from keyturn.settings import Settings
from keyturn.wiring import open_engine

SECTIONS = ("cpu", "pgwork", "big", "scale", "pgbench")
SERVICE_CLIENT = "sizing-service"
"""The confidential client of the client-credentials lines."""
TOP_STATEMENTS = 10
USER_LIST_CALLS = 20
"""Per-user listings timed after the first (which prepares the statement)."""
DAY = timedelta(days=1)
STATS_SETTLE_SECONDS = 11.0
"""How long a backend may keep counters it has not handed to the statistics yet while
idle (PostgreSQL 15's `PGSTAT_IDLE_INTERVAL`, 10 s), and a second more."""

T = TypeVar("T")


# PostgreSQL's CPU


def _postgres_pids() -> list[int]:
    done = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True, check=False)
    return [int(p) for p in done.stdout.split()]


@dataclass(frozen=True, slots=True)
class DatabaseCpu:
    """Where PostgreSQL's CPU is read: the postmaster's process tree (every backend,
    the WAL writer, the checkpointer...), or, where its pid cannot be read, every
    process named `postgres`."""

    postmaster: int | None

    @classmethod
    def locate(cls) -> DatabaseCpu | None:
        """The postmaster's pid is the first line of `postmaster.pid` in the data
        directory; None if neither it nor any `postgres` process is visible here."""
        done = subprocess.run(
            ["psql", PG, "-Atc", "SHOW data_directory"], capture_output=True, text=True, check=False
        )
        try:
            pid = int((Path(done.stdout.strip()) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        if pid and Path(f"/proc/{pid}/stat").exists():
            return cls(pid)
        return cls(None) if _postgres_pids() else None

    @property
    def source(self) -> str:
        if self.postmaster is not None:
            return f"process tree of the postmaster (pid {self.postmaster})"
        return "every process named postgres (pgrep -x postgres)"

    def seconds(self) -> float:
        if self.postmaster is not None:
            return sum(tree_cpu_seconds(self.postmaster).values())
        return sum(cpu_seconds(p) or 0.0 for p in _postgres_pids())


# PostgreSQL's counters


_WAL = "SELECT wal_records, wal_fpi, wal_bytes::bigint, wal_write, wal_sync FROM pg_stat_wal"
_DATABASE = (
    "SELECT xact_commit, xact_rollback, blks_hit, blks_read, tup_updated, tup_fetched "
    "FROM pg_stat_database WHERE datname = current_database()"
)
_TABLES = (
    "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, seq_scan, "
    "coalesce(idx_scan, 0) AS idx_scan FROM pg_stat_user_tables WHERE schemaname = $1"
)
_STATEMENTS = (
    "SELECT queryid, min(query) AS query, sum(calls)::bigint AS calls FROM pg_stat_statements "
    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND queryid IS NOT NULL GROUP BY queryid"
)


async def statements_missing(conn: asyncpg.Connection) -> str | None:
    """Why `pg_stat_statements` cannot be read here, or None if it can."""
    if not await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"):
        return "the extension pg_stat_statements is not created in this database"
    preloaded = str(await conn.fetchval("SELECT current_setting('shared_preload_libraries')"))
    if "pg_stat_statements" not in preloaded:
        return f"pg_stat_statements is not in shared_preload_libraries ({preloaded!r})"
    return None


@dataclass(frozen=True, slots=True)
class Counters:
    """PostgreSQL's cumulative statistics at one moment."""

    wal: dict[str, int]
    database: dict[str, int]
    tables: dict[str, dict[str, int]]
    """By table of keyturn's schema."""
    statements: dict[int, tuple[str, int]] | None
    """Calls by query id, with the query's text; None without pg_stat_statements."""


async def snapshot(conn: asyncpg.Connection, schema: str, statements: bool) -> Counters:
    wal = await conn.fetchrow(_WAL)
    database = await conn.fetchrow(_DATABASE)
    tables = {
        str(r["relname"]): {k: int(v) for k, v in r.items() if k != "relname"}
        for r in await conn.fetch(_TABLES, schema)
    }
    calls = (
        {
            int(r["queryid"]): (str(r["query"]), int(r["calls"]))
            for r in await conn.fetch(_STATEMENTS)
        }
        if statements
        else None
    )
    assert wal is not None
    assert database is not None
    return Counters(
        {k: int(v) for k, v in wal.items()}, {k: int(v) for k, v in database.items()}, tables, calls
    )


def _per(delta: dict[str, int], rotations: int) -> dict[str, float | None]:
    return {k: round(v / rotations, 3) if rotations else None for k, v in delta.items()}


def _difference(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def work_per_rotation(
    before: Counters, after: Counters, rotations: int, missing: str | None
) -> dict[str, Any]:
    """The counters' deltas, and each over `rotations`."""
    wal = _difference(before.wal, after.wal)
    database = _difference(before.database, after.database)
    tables = {t: _difference(before.tables.get(t, {}), after.tables[t]) for t in after.tables}
    found: dict[str, Any] = {
        "wal": {"delta": wal, "per_rotation": _per(wal, rotations)},
        "database": {"delta": database, "per_rotation": _per(database, rotations)},
        "tables": {
            t: {"delta": d, "per_rotation": _per(d, rotations)}
            for t, d in sorted(tables.items())
            if any(d.values())
        },
        "statements": None,
        "statements_missing": missing,
    }
    if before.statements is None or after.statements is None:
        return found
    # Query texts name tables without their schema: keep those naming one of keyturn's.
    names = "|".join(re.escape(t) for t in after.tables)
    ours = re.compile(rf"\b({names})\b", re.IGNORECASE)
    calls = [
        (text, n - before.statements.get(qid, ("", 0))[1])
        for qid, (text, n) in after.statements.items()
        if names and ours.search(text)
    ]
    calls = sorted(((t, n) for t, n in calls if n > 0), key=lambda c: -c[1])
    total = sum(n for _, n in calls)
    found["statements"] = {
        "calls": total,
        "calls_per_rotation": round(total / rotations, 3) if rotations else None,
        "top": [
            {
                "query": " ".join(text.split())[:120],
                "calls": n,
                "calls_per_rotation": round(n / rotations, 3) if rotations else None,
            }
            for text, n in calls[:TOP_STATEMENTS]
        ],
    }
    return found


class DatabaseWindow:
    """PostgreSQL's CPU over the measured window, as `Window` measures the server's: a
    thread samples `warmup` seconds after start and again `seconds` later, the moments
    the load's window opens and closes. `cpu_percent` stays None where PostgreSQL's
    processes cannot be seen from here."""

    def __init__(self, cpu: DatabaseCpu | None, warmup: float, seconds: float) -> None:
        self.cpu_percent: float | None = None
        self._cpu = cpu
        self._thread = threading.Thread(target=self._run, args=(warmup, seconds), daemon=True)

    def _run(self, warmup: float, seconds: float) -> None:
        if self._cpu is None:
            return
        time.sleep(warmup)
        began = time.monotonic()
        used = self._cpu.seconds()
        time.sleep(seconds)
        used = self._cpu.seconds() - used
        self.cpu_percent = round(100 * used / (time.monotonic() - began), 1)

    def __enter__(self) -> DatabaseWindow:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=5)


# Measuring one line


@dataclass(frozen=True, slots=True)
class Measured:
    """What every line records beside its load's own result."""

    busy_before: float
    server_cpu_percent: float
    server_process_cpu_percents: list[float]
    server_peak_rss_mb: float
    machine_busy_percent: float
    database_cpu_percent: float | None
    """PostgreSQL's, in % of one core; None on SQLite or where it cannot be read."""


def watched(
    pid: int,
    database: DatabaseCpu | None,
    busy: float,
    warmup: float,
    seconds: float,
    load: Callable[[], T],
) -> tuple[T, Measured]:
    """Run `load` (which measures `seconds` after `warmup`) with the server's and the
    database's CPU watched over its measured window."""
    with (
        Window(pid, warmup, seconds) as window,
        DatabaseWindow(database, warmup, seconds) as db,
    ):
        result = load()
    return result, Measured(
        busy_before=round(busy, 1),
        server_cpu_percent=window.server_percent,
        server_process_cpu_percents=window.process_percents,
        server_peak_rss_mb=window.peak_rss_mb,
        machine_busy_percent=window.machine_percent,
        database_cpu_percent=db.cpu_percent,
    )


def measure(
    pid: int, database: DatabaseCpu | None, args: argparse.Namespace, load: Callable[[], T]
) -> tuple[T, Measured]:
    """Wait for quiet, then `watched` over `args.seconds` after `args.warmup`."""
    busy = wait_for_quiet(patience=args.quiet_wait)
    return watched(pid, database, busy, args.warmup, args.seconds, load)


def per_cpu(rate: float, seen: Measured) -> dict[str, float | None]:
    """The rate per keyturn CPU-second, and the database vCPU per 1,000 a second."""
    keyturn_cores = seen.server_cpu_percent / 100
    database = seen.database_cpu_percent
    return {
        "per_keyturn_cpu_second": round(rate / keyturn_cores, 1) if keyturn_cores else None,
        "database_vcpu_per_1000_per_second": (
            round((database / 100) / (rate / 1000), 3) if database is not None and rate else None
        ),
    }


def rotation_row(result: LoadResult, seen: Measured, **labels: object) -> dict[str, Any]:
    return {
        **labels,
        "request": "rotation",
        **asdict(result),
        **asdict(seen),
        **per_cpu(result.rotations_per_second, seen),
    }


def grant_row(result: GrantResult, seen: Measured, **labels: object) -> dict[str, Any]:
    return {
        **labels,
        "request": result.grant,
        **asdict(result),
        **asdict(seen),
        **per_cpu(result.per_second, seen),
    }


def say(label: str, row: dict[str, Any]) -> None:
    """One readable line of a rotation or grant row."""
    rate = row.get("rotations_per_second", row.get("per_second"))
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(row["errors"].items())) or "0"
    text = (
        f"{label:38} c={row['concurrency']:>3} {rate:8.1f}/s "
        f"p50={row['p50_ms']:.1f}ms p99={row['p99_ms']:.1f}ms "
        f"keyturn={row['server_cpu_percent']:.0f}% ({row['per_keyturn_cpu_second']}/CPU-s)"
    )
    if row["database_cpu_percent"] is not None:
        text += (
            f" postgres={row['database_cpu_percent']:.0f}% "
            f"({row['database_vcpu_per_1000_per_second']} vCPU per 1,000/s)"
        )
    print(f"{text} busy={row['machine_busy_percent']:.0f}% errors={errors}", flush=True)


# Sections


def _settings(database: dict[str, str], **overrides: object) -> Settings:
    """keyturn's shipped settings on `database` (what `keyturn` commands read)."""
    values: dict[str, object] = {
        "database_url": database["KEYTURN_DATABASE_URL"],
        "db_schema": database.get("KEYTURN_DB_SCHEMA"),
        "secret_key": SECRET,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


async def add_service_client(settings: Settings) -> str:
    """A confidential client with the client-credentials grant only; its secret."""
    engine = await open_engine(settings, schema=settings.db_schema)
    try:
        added = await engine.admin.add_client(
            SERVICE_CLIENT,
            ClientType.CONFIDENTIAL,
            grant_types={GrantType.CLIENT_CREDENTIALS},
            scope=frozenset({"read"}),
        )
    finally:
        await engine.close()
    assert added.secret is not None
    return added.secret


@contextmanager
def served(store: str, workers: int, folder: Path) -> Iterator[tuple[int, str, dict[str, str]]]:
    """keyturn serving a new database: its pid, its base URL and the database."""
    with (
        keyturn_database(store, folder) as database,
        keyturn_server(Spec(KEYTURN, store, workers), folder, database) as (running, base),
    ):
        yield running.pid, base, database


def cpu(args: argparse.Namespace, folder: Path, db_cpu: DatabaseCpu | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    c = args.concurrency
    for store in args.stores.split(","):
        with served(store, args.workers, folder) as (pid, base, database):
            settings = _settings(database)
            users = asyncio.run(register(settings, args.login_users * SESSIONS_PER_USER))
            secret = asyncio.run(add_service_client(settings))
            tokens = asyncio.run(log_in(base, users, 2 * c))
            database_cpu = db_cpu if store == "postgres" else None
            labels = {"store": store, "workers": args.workers}
            endpoint = Endpoint(f"{base}/oauth/token", "oauth", "bench")
            load = functools.partial(run_load, endpoint, tokens, c, args.seconds, args.warmup)
            rotations, seen = measure(pid, database_cpu, args, load)
            rows.append(rotation_row(rotations, seen, **labels))
            say(f"cpu · {store} · rotations", rows[-1])
            lines = [("login", logins(users), n) for n in int_list(args.login_concurrency)]
            lines += [
                ("client_credentials", client_credentials(SERVICE_CLIENT, secret), n)
                for n in int_list(args.cc_concurrency)
            ]
            for grant, request, n in lines:
                drive = functools.partial(
                    run_grants, base, grant, request, n, args.seconds, args.warmup
                )
                result, seen = measure(pid, database_cpu, args, drive)
                row = grant_row(result, seen, **labels)
                if grant == "login":
                    row["users"] = len(users)
                rows.append(row)
                say(f"cpu · {store} · {grant}", row)
    return rows


def pgwork(
    args: argparse.Namespace, folder: Path, db_cpu: DatabaseCpu | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    c = args.concurrency
    for workers in int_list(args.pgwork_workers):
        with served("postgres", workers, folder) as (pid, base, database):
            schema = database["KEYTURN_DB_SCHEMA"]
            settings = _settings(database)
            users = asyncio.run(register(settings, 4 * c))
            tokens = asyncio.run(log_in(base, users, 4 * c))
            missing = asyncio.run(_statements_missing())
            endpoint = Endpoint(f"{base}/oauth/token", "oauth", "bench")
            # A backend hands its counters to the statistics at most once a second while
            # busy, and an idle one within `STATS_SETTLE_SECONDS`: snapshots taken while
            # the load runs would each miss up to a second of some backends' work. So
            # the warm-up is a run of its own, the counters are read once everything it
            # did has been counted, the measured run starts from nothing (no warm-up in
            # it: every rotation it makes is counted in `result.rotations`), and the
            # counters are read again once its work has been counted. The difference
            # is the measured run's work, and keyturn's background reads (its key table,
            # every 30 s) and the snapshots' own few statements: nothing else of
            # keyturn's runs in between.
            busy = wait_for_quiet(patience=args.quiet_wait)
            if args.warmup > 0:
                run_load(endpoint, tokens[: 2 * c], c, args.warmup, 0)
            time.sleep(STATS_SETTLE_SECONDS)
            before = asyncio.run(_counters(schema, missing is None))
            load = functools.partial(run_load, endpoint, tokens[2 * c :], c, args.seconds, 0)
            result, seen = watched(pid, db_cpu, busy, 0, args.seconds, load)
            time.sleep(STATS_SETTLE_SECONDS)
            after = asyncio.run(_counters(schema, missing is None))
            row = rotation_row(result, seen, store="postgres", workers=workers)
            row |= work_per_rotation(before, after, result.rotations, missing)
            rows.append(row)
            say(f"pgwork · {workers}w", row)
            wal = row["wal"]["per_rotation"]
            totals = row["database"]["per_rotation"]
            statements = row["statements"]
            print(
                f"{'':38} per rotation: {wal['wal_records']} WAL records, "
                f"{wal['wal_bytes']} WAL bytes, {wal['wal_fpi']} full-page images, "
                f"{totals['xact_commit']} commits, {totals['blks_hit']} buffer hits; "
                + (
                    f"{statements['calls_per_rotation']} statements" if statements else str(missing)
                ),
                flush=True,
            )
    return rows


async def _statements_missing() -> str | None:
    conn = await asyncpg.connect(PG)
    try:
        return await statements_missing(conn)
    finally:
        await conn.close()


async def _counters(schema: str, statements: bool) -> Counters:
    conn = await asyncpg.connect(PG)
    try:
        return await snapshot(conn, schema, statements)
    finally:
        await conn.close()


async def _disk(target: Target) -> dict[str, Any]:
    conn = await asyncpg.connect(PG, server_settings={"search_path": target.schema or ""})
    try:
        sizes = await conn.fetchrow(
            "SELECT pg_total_relation_size('sessions') AS total, "
            "pg_relation_size('sessions') AS heap, pg_indexes_size('sessions') AS indexes, "
            "pg_total_relation_size('users') AS users_total"
        )
        indexes = await conn.fetch(
            "SELECT indexrelname, pg_relation_size(indexrelid) AS bytes "
            "FROM pg_stat_user_indexes WHERE schemaname = $1 AND relname = 'sessions' "
            "ORDER BY indexrelname",
            target.schema,
        )
    finally:
        await conn.close()
    assert sizes is not None
    n = target.sessions
    return {
        "sessions": n,
        "users": target.users,
        "sessions_total_bytes": sizes["total"],
        "sessions_heap_bytes": sizes["heap"],
        "sessions_indexes_bytes": sizes["indexes"],
        "users_total_bytes": sizes["users_total"],
        "bytes_per_session": {
            "total": round(sizes["total"] / n, 1),
            "heap": round(sizes["heap"] / n, 1),
            "indexes": round(sizes["indexes"] / n, 1),
            "with_users": round((sizes["total"] + sizes["users_total"]) / n, 1),
        },
        "index_bytes": {str(r["indexrelname"]): int(r["bytes"]) for r in indexes},
    }


async def _user_lists(target: Target) -> dict[str, Any]:
    """One user's live sessions as `keyturn sessions list --user NAME` reads them
    (`engine.admin.list_sessions`): the first call, then `USER_LIST_CALLS` more, each of
    another user."""
    engine = await open_engine(_settings(_database(target)), schema=target.schema)
    try:
        times: list[float] = []
        found = 0
        for j in range(USER_LIST_CALLS + 1):
            began = time.perf_counter()
            name = f"bench-{j % target.users}"
            found = len(await engine.admin.list_sessions(name, include_revoked=False))
            times.append(time.perf_counter() - began)
    finally:
        await engine.close()
    return {
        "sessions_per_user": found,
        "first_ms": round(1000 * times[0], 2),
        "median_ms": round(1000 * statistics.median(times[1:]), 2),
        "max_ms": round(1000 * max(times[1:]), 2),
        "calls": len(times) - 1,
    }


def _list_all(database: dict[str, str], db_timeout: float, out: Connection) -> None:
    """In a process of its own (a list of millions of sessions takes gigabytes): every
    live session as `keyturn sessions list` reads them, timed from the call to its
    answer or its error; sends what happened."""
    began: list[float] = []

    async def run() -> int:
        engine = await open_engine(
            _settings(database, db_timeout=db_timeout), schema=database["KEYTURN_DB_SCHEMA"]
        )
        try:
            began.append(time.perf_counter())
            return len(await engine.admin.list_sessions(None, include_revoked=False))
        finally:
            await engine.close()

    try:
        rows: int | None = asyncio.run(run())
    except Exception as error:
        outcome, rows = f"{type(error).__name__}: {error}", None
    else:
        outcome = "ok"
    ended = time.perf_counter()
    out.send(
        {
            "outcome": outcome,
            "seconds": round(ended - began[0], 2) if began else None,
            "rows": rows,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    )


def _full_list(target: Target, db_timeout: float) -> dict[str, Any]:
    """`_list_all` in a child process, stopped if it outlives twice its statement
    timeout and 30 s more (turning millions of rows into objects takes a while too)."""
    spawn = multiprocessing.get_context("spawn")
    receive, send = spawn.Pipe(duplex=False)
    child = spawn.Process(target=_list_all, args=(_database(target), db_timeout, send))
    limit = 2 * db_timeout + 30
    child.start()
    send.close()  # the child's end only: its exit then reads as EOF here
    found: dict[str, Any] = {"seconds": None, "rows": None, "peak_rss_mb": None}
    try:
        if receive.poll(limit):
            found = receive.recv()
        else:
            found |= {
                "outcome": f"timeout: still running after {limit:g} s, stopped",
                "seconds": limit,
            }
            child.kill()
    except EOFError:
        found |= {"outcome": "the process ended without an answer"}
    child.join(timeout=30)
    if child.exitcode not in (0, None) and found["rows"] is None:
        found["outcome"] += f" (exit code {child.exitcode})"
    return {
        **found,
        "db_timeout": db_timeout,
        "shipped_db_timeout": Settings.model_fields["db_timeout"].default,
    }


END_SOME = (
    "UPDATE sessions SET revoked_at = now() - $3::interval, revoked_reason = $4 "
    "WHERE id IN (SELECT md5('s' || i)::uuid::text "
    "FROM generate_series($1::bigint, $2::bigint, $1::bigint) AS i)"
)
"""Sessions k, 2k, 3k... (`bench.engine.preload` derives session i's id from i) revoked
by an administrator, at $3 ago: $1 = k, $2 = the sessions preloaded."""


async def _end_some(target: Target, every: int, ended: timedelta) -> int:
    """`END_SOME`: every k-th session ended, spread over the whole table as sessions end
    in production. Returns how many."""
    conn = await asyncpg.connect(PG, server_settings={"search_path": target.schema or ""})
    try:
        status = await conn.execute(
            END_SOME,
            every,
            target.sessions,
            ended,
            RevocationReason.ADMIN_REVOKED.value,
        )
    finally:
        await conn.close()
    return int(status.split()[-1])


async def _purge(target: Target, timeout: float) -> dict[str, Any]:
    """`keyturn purge`: `engine.admin.purge()` with the shipped settings."""
    engine = await open_engine(_settings(_database(target)), schema=target.schema)
    began = time.perf_counter()
    try:
        deleted = await asyncio.wait_for(engine.admin.purge(), timeout)
    except TimeoutError:
        return {"outcome": f"timeout after {timeout:g} s", "seconds": timeout, "deleted": None}
    except Exception as error:
        seconds = round(time.perf_counter() - began, 2)
        return {"outcome": f"{type(error).__name__}: {error}", "seconds": seconds, "deleted": None}
    finally:
        await engine.close()
    return {"outcome": "ok", "seconds": round(time.perf_counter() - began, 2), "deleted": deleted}


def _database(target: Target) -> dict[str, str]:
    database = {"KEYTURN_DATABASE_URL": target.url}
    if target.schema:
        database["KEYTURN_DB_SCHEMA"] = target.schema
    return database


def big(args: argparse.Namespace, folder: Path, db_cpu: DatabaseCpu | None) -> dict[str, Any]:
    c = args.concurrency
    n = args.big_sessions
    levels = int_list(args.big_workers)
    pool = Settings.model_fields["db_pool_size"].default
    print(f"# big: preloading {n:,} sessions on PostgreSQL", flush=True)
    began = time.perf_counter()
    target = prepare("postgres", n, folder, pool, settle=False)
    found: dict[str, Any] = {
        "sessions": n,
        "preload_seconds": round(target.preload_seconds, 1),
        "prepare_seconds": round(time.perf_counter() - began, 1),
    }
    try:
        found["disk"] = asyncio.run(_disk(target))
        per = found["disk"]["bytes_per_session"]
        print(
            f"# big: {per['total']:.0f} bytes per live session ({per['heap']:.0f} heap, "
            f"{per['indexes']:.0f} indexes), {per['with_users']:.0f} with its share of users",
            flush=True,
        )

        async def derive(indices: list[int]) -> list[str]:
            engine = await open_engine(target.settings(), schema=target.schema)
            try:
                return await first_tokens(engine, target, indices)
            finally:
                await engine.close()

        chosen = random.Random(n).sample(range(1, n + 1), 2 * c * len(levels))
        tokens = asyncio.run(derive(chosen))
        found["rotations"] = []
        for i, workers in enumerate(levels):
            block = tokens[2 * c * i : 2 * c * (i + 1)]
            spec = Spec(KEYTURN, "postgres", workers)
            with keyturn_server(spec, folder, _database(target)) as (running, _):
                load = functools.partial(
                    run_load, running.endpoint, block, c, args.seconds, args.warmup
                )
                result, seen = measure(running.pid, db_cpu, args, load)
            found["rotations"].append(
                rotation_row(result, seen, store="postgres", workers=workers, sessions=n)
            )
            say(f"big · {n:,} · {workers}w", found["rotations"][-1])
        found["user_list"] = asyncio.run(_user_lists(target))
        print(
            f"# big: one user's sessions ({found['user_list']['sessions_per_user']}) listed in "
            f"{found['user_list']['median_ms']} ms (first {found['user_list']['first_ms']} ms)",
            flush=True,
        )
        found["full_list"] = _full_list(target, args.list_timeout)
        print(
            f"# big: every live session listed: {found['full_list']['outcome']}, "
            f"{found['full_list']['rows']} rows in {found['full_list']['seconds']} s",
            flush=True,
        )
        every = max(1, round(1 / args.big_ended))
        retention = Settings.model_fields["purge_retention"].default
        ended_ago = timedelta(seconds=retention) + DAY
        began = time.perf_counter()
        ended = asyncio.run(_end_some(target, every, ended_ago))
        found["purge"] = {
            "ended_sessions": ended,
            "every": every,
            "ended_fraction": round(ended / n, 5),
            "ended_days_ago": ended_ago / DAY,
            "update_seconds": round(time.perf_counter() - began, 2),
            "update": END_SOME,
            "update_parameters": [every, n, f"{ended_ago / DAY:g} days", "admin_revoked"],
            "purge_retention": retention,
            **asyncio.run(_purge(target, args.purge_timeout)),
        }
        print(
            f"# big: {ended:,} sessions ended, purge: {found['purge']['outcome']}, "
            f"{found['purge']['deleted']} rows deleted in {found['purge']['seconds']} s",
            flush=True,
        )
    finally:
        dispose(target)
    return found


def scale(
    args: argparse.Namespace, folder: Path, db_cpu: DatabaseCpu | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    c = args.concurrency
    for workers in int_list(args.processes):
        with keyturn(Spec(KEYTURN, "postgres", workers), args.tokens, folder) as running:
            block = running.tokens[: 2 * c]
            load = functools.partial(
                run_load, running.endpoint, block, c, args.seconds, args.warmup
            )
            result, seen = measure(running.pid, db_cpu, args, load)
        labels = {"store": "postgres", "workers": workers, "sessions": args.tokens}
        rows.append(rotation_row(result, seen, **labels))
        say(f"scale · {workers}w", rows[-1])
    return rows


def commit_rate(
    args: argparse.Namespace,
    folder: Path,  # noqa: ARG001 - the signature of every section
    db_cpu: DatabaseCpu | None,  # noqa: ARG001
) -> list[dict[str, Any]]:
    return [asdict(r) for r in pgbench([16, 64], args.pgbench_seconds, args.quiet_wait)]


# Running


def keyturn_settings() -> dict[str, Any]:
    """The shipped settings the figures depend on. Argon2id's parameters are read from
    a hash made by keyturn's `Passwords` as the server builds it."""
    fields = Settings.model_fields
    found = argon2.extract_parameters(Passwords().hash("sizing"))
    return {
        "argon2": {
            "type": found.type.name.lower(),
            "version": found.version,
            "memory_cost_kib": found.memory_cost,
            "time_cost": found.time_cost,
            "parallelism": found.parallelism,
            "salt_len": found.salt_len,
            "hash_len": found.hash_len,
        },
        **{
            name: getattr(fields[name].default, "value", fields[name].default)
            for name in (
                "db_pool_size",
                "db_timeout",
                "log_format",
                "log_level",
                "signing_alg",
                "access_token_ttl",
                "purge_retention",
            )
        },
    }


def _shown(value: object) -> object:
    """A setting as the JSON records it: a path inside the repository relative to it."""
    if isinstance(value, Path):
        return str(value.relative_to(ROOT)) if value.is_relative_to(ROOT) else str(value)
    return value


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sizing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    parser.add_argument("--stores", default="postgres,sqlite", help="of the cpu section")
    parser.add_argument("--workers", type=int, default=1, help="of the cpu section")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured per line")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured, first")
    parser.add_argument("--concurrency", type=int, default=64, help="refresh chains")
    parser.add_argument("--login-concurrency", default="4,8")
    parser.add_argument(
        "--login-users", type=int, default=200, help="users the login lines log in, in turn"
    )
    parser.add_argument("--cc-concurrency", default="16,64", help="client-credentials lines")
    parser.add_argument("--pgwork-workers", default="1,2")
    parser.add_argument("--big-sessions", type=int, default=10_000_000)
    parser.add_argument("--big-workers", default="1,2")
    parser.add_argument(
        "--big-ended", type=float, default=0.01, help="share of sessions ended before the purge"
    )
    parser.add_argument(
        "--list-timeout",
        type=float,
        default=60.0,
        help="KEYTURN_DB_TIMEOUT of the full session listing (at most 60)",
    )
    parser.add_argument("--purge-timeout", type=float, default=3600.0)
    parser.add_argument("--processes", default="1,2,4", help="worker processes, scale section")
    parser.add_argument("--tokens", type=int, default=2000, help="sessions, scale section")
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--quiet-wait", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if not set(args.stores.split(",")) <= {"postgres", "sqlite"}:
        parser.error("--stores: postgres, sqlite or both")
    if not 0 < args.big_ended <= 1:
        parser.error("--big-ended is a share: more than 0, at most 1")
    if not 0 < args.list_timeout <= 60:
        parser.error("--list-timeout is KEYTURN_DB_TIMEOUT: more than 0, at most 60")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    wanted = [s for s in SECTIONS if s in args.only.split(",")]
    facts = machine()
    db_cpu = DatabaseCpu.locate()
    payload: dict[str, Any] = {
        "machine": facts,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench.sizing", *argv]),
        "versions": versions([]),
        "postgresql_settings": postgres_settings(),
        "keyturn_settings": keyturn_settings(),
        "settings": {k: _shown(v) for k, v in vars(args).items()},
        "database_cpu_source": db_cpu.source if db_cpu else None,
        **dict.fromkeys(SECTIONS),
        "failures": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"sizing-{facts['date']}.json"
    runs: dict[str, Callable[[argparse.Namespace, Path, DatabaseCpu | None], Any]] = {
        "cpu": cpu,
        "pgwork": pgwork,
        "big": big,
        "scale": scale,
        "pgbench": commit_rate,
    }
    with tempfile.TemporaryDirectory(prefix="keyturn-sizing-") as folder:
        for section in wanted:
            print(f"# {section}", flush=True)
            try:
                payload[section] = runs[section](args, Path(folder), db_cpu)
            except Exception:
                payload["failures"][section] = traceback.format_exc(limit=5)
                print(f"# {section} failed:\n{payload['failures'][section]}", flush=True)
            out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"# wrote {out}", flush=True)
    return 1 if payload["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
