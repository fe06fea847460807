"""Rotations per second and latency through the engine and the store, no HTTP.

    .venv/bin/python -m bench.engine                 # the full matrix
    .venv/bin/python -m bench.engine --quick         # a smoke run (~1 minute)

For each store (SQLite, PostgreSQL) and each number of preloaded live sessions, it
runs C concurrent callers (asyncio tasks, in P processes), each rotating its own chain
of refresh tokens through `Refresher.refresh` for a fixed time, checking every answer.
It prints a line per configuration, writes `bench/results/engine-<date>.json`, and the
table in `docs/benchmarks.md`. Sessions rotated are drawn at random from the preloaded
set, so lookups hit a large table and index, not a few hot rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.engine.report import write_section
from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import ClientType, Delivery, GrantType, Session
from keyturn.settings import Settings
from keyturn.wiring import Engine, migrate, open_engine

PG = os.environ.get("KEYTURN_BENCH_PG", "postgresql://root@127.0.0.1:5432/test")
SECRET = "bench-master-secret-" + "x" * 20
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Target:
    store: str
    url: str
    schema: str | None


@dataclass
class Result:
    store: str
    sessions: int
    processes: int
    concurrency: int
    seconds: float
    rotations: int
    rotations_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]


def settings(target: Target) -> Settings:
    return Settings(
        database_url=target.url,
        db_schema=target.schema,
        secret_key=SECRET,
        db_pool_size=32,
        grace_seconds=10,
    )


def session_id(i: int) -> SessionId:
    return SessionId(str(uuid.UUID(int=i)))


def salt(i: int) -> bytes:
    return i.to_bytes(8, "big")


async def seed(engine: Engine) -> tuple[UserId, ClientId]:
    user = await engine.admin.add_user("bench", "a long bench passphrase")
    created = await engine.admin.add_client(
        "bench",
        ClientType.PUBLIC,
        grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
        scope=frozenset({"read", "write"}),
        delivery=Delivery.BODY,
    )
    return user.id, created.client.id


async def preload(target: Target, count: int, user: str, client: str, mac_key_id: int) -> None:
    """Insert `count` live sessions in bulk (ids and salts derived from the index)."""
    if target.store == "postgres":
        conn = await asyncpg.connect(
            target.url, server_settings={"search_path": target.schema or "public"}
        )
        try:
            await conn.execute(
                """
                INSERT INTO sessions (id, user_id, client_id, scope, salt, generation, mac_key_id,
                    created_at, last_used_at, idle_expires_at, absolute_expires_at)
                SELECT lpad(to_hex(i), 32, '0')::uuid::text, $1, $2, 'read write',
                    int8send(i::bigint), 0, $3, now(), now(),
                    now() + interval '10 days', now() + interval '20 days'
                FROM generate_series(1, $4) AS i
                """,
                user,
                client,
                mac_key_id,
                count,
            )
            await conn.execute("ANALYZE sessions")
        finally:
            await conn.close()
        return
    path = target.url.removeprefix("sqlite:///")
    now = int(time.time() * 1_000_000)
    day = 86_400_000_000
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous = OFF")
    rows = (
        (str(uuid.UUID(int=i)), user, client, "read write", salt(i), 0, mac_key_id,
         now, now, now + 10 * day, now + 20 * day)
        for i in range(1, count + 1)
    )  # fmt: skip
    with db:
        db.executemany(
            "INSERT INTO sessions (id, user_id, client_id, scope, salt, generation, mac_key_id, "
            "created_at, last_used_at, idle_expires_at, absolute_expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.execute("ANALYZE")
    db.close()


async def first_tokens(engine: Engine, indices: list[int], user: str, client: str) -> list[str]:
    mac = await engine.tokens.active_mac_key_id()
    now = datetime.now(UTC)
    tokens = []
    for i in indices:
        session = Session(
            id=session_id(i),
            user_id=UserId(user),
            client_id=ClientId(client),
            scope=frozenset({"read", "write"}),
            salt=salt(i),
            generation=0,
            mac_key_id=mac,
            created_at=now,
            last_used_at=now,
            rotated_at=None,
            idle_expires_at=now + timedelta(days=10),
            absolute_expires_at=now + timedelta(days=20),
        )
        tokens.append(await engine.tokens.encode_refresh(session, 0))
    return tokens


async def drive(
    target: Target, indices: list[int], seconds: float, start_at: float
) -> dict[str, Any]:
    """Run one caller per index for `seconds`; latencies in nanoseconds."""
    engine = await open_engine(settings(target))
    try:
        client = await engine.admin.get_client("bench")
        user = (await engine.admin.user_named("bench")).id
        tokens = await first_tokens(engine, indices, user, client.id)
        latencies: list[int] = []
        errors: dict[str, int] = {}
        await asyncio.sleep(max(0.0, start_at - time.time()))
        deadline = time.perf_counter() + seconds

        async def caller(token: str) -> None:
            while time.perf_counter() < deadline:
                began = time.perf_counter_ns()
                try:
                    issued = await engine.refresher.refresh(token, client)
                except Exception as error:
                    errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                    return
                latencies.append(time.perf_counter_ns() - began)
                if not issued.refresh_token or issued.refresh_token == token:
                    errors["no_new_token"] = errors.get("no_new_token", 0) + 1
                    return
                token = issued.refresh_token

        await asyncio.gather(*(caller(t) for t in tokens))
        return {"latencies": latencies, "errors": errors}
    finally:
        await engine.close()


def _process(target: Target, indices: list[int], seconds: float, start_at: float, out: Any) -> None:
    out.put(asyncio.run(drive(target, indices, seconds, start_at)))


def measure(
    target: Target,
    sessions: int,
    processes: int,
    concurrency: int,
    seconds: float,
    rng: random.Random,
) -> Result:
    indices = rng.sample(range(1, sessions + 1), concurrency)
    shares = [indices[i::processes] for i in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # every process has opened its engine by then
    procs = [
        ctx.Process(target=_process, args=(target, share, seconds, start_at, out))
        for share in shares
    ]
    for proc in procs:
        proc.start()
    parts = [out.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join()
    latencies = sorted(x for part in parts for x in part["latencies"])
    errors: dict[str, int] = {}
    for part in parts:
        for kind, n in part["errors"].items():
            errors[kind] = errors.get(kind, 0) + n

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e6 if latencies else 0.0
        )

    return Result(
        store=target.store,
        sessions=sessions,
        processes=processes,
        concurrency=concurrency,
        seconds=seconds,
        rotations=len(latencies),
        rotations_per_second=len(latencies) / seconds,
        p50_ms=pct(0.50),
        p90_ms=pct(0.90),
        p99_ms=pct(0.99),
        max_ms=latencies[-1] / 1e6 if latencies else 0.0,
        errors=errors,
    )


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def prepare(store: str, sessions: int, folder: Path) -> Target:
    if store == "postgres":
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_pg_admin(f"CREATE SCHEMA {schema}"))
        target = Target(store, PG, schema)
    else:
        target = Target(store, f"sqlite:///{folder / f'bench-{sessions}.db'}", None)
    migrate(settings(target))

    async def setup() -> None:
        engine = await open_engine(settings(target))
        try:
            user, client = await seed(engine)
            mac = await engine.tokens.active_mac_key_id()
        finally:
            await engine.close()
        await preload(target, sessions, user, client, mac)

    began = time.perf_counter()
    asyncio.run(setup())
    print(
        f"# {store}: preloaded {sessions:,} sessions in {time.perf_counter() - began:.1f} s",
        flush=True,
    )
    return target


def dispose(target: Target) -> None:
    if target.schema:
        asyncio.run(_pg_admin(f"DROP SCHEMA {target.schema} CASCADE"))


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    async def pg_version() -> str:
        conn = await asyncpg.connect(PG)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{memory:.0f} GiB",
        "python": platform.python_version(),
        "postgresql": asyncio.run(pg_version()),
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit.stdout.strip(),
    }


def line(r: Result) -> str:
    return (
        f"{r.store:8} sessions={r.sessions:>9,} processes={r.processes} "
        f"concurrency={r.concurrency:>3} rotations/s={r.rotations_per_second:8.0f} "
        f"p50={r.p50_ms:6.2f}ms p99={r.p99_ms:6.2f}ms errors={r.errors or 0}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--sessions", default="100000,1000000")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument(
        "--processes", default="1,2", help="process counts (2 is run at the top concurrency)"
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--quick", action="store_true", help="10,000 sessions, 2 s, concurrency 1 and 16"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.concurrency, args.processes, args.seconds = "10000", "1,16", "1", 2.0
    stores = args.stores.split(",")
    sizes = [int(x) for x in args.sessions.split(",")]
    levels = [int(x) for x in args.concurrency.split(",")]
    process_counts = [int(x) for x in args.processes.split(",")]
    rng = random.Random(2026)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="keyturn-bench-") as tmp:
        for store in stores:
            for size in sizes:
                target = prepare(store, size, Path(tmp))
                try:
                    plan = [(1, c) for c in levels] + [
                        (p, max(levels)) for p in process_counts if p > 1
                    ]
                    for processes, concurrency in plan:
                        result = measure(target, size, processes, concurrency, args.seconds, rng)
                        results.append(result)
                        print(line(result), flush=True)
                finally:
                    dispose(target)
    if args.no_write:
        return
    facts = machine()
    command = "python -m bench.engine " + " ".join(sys.argv[1:])
    out = ROOT / "bench" / "results" / f"engine-{facts['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": facts, "command": command, "results": [asdict(r) for r in results]},
            indent=2,
        )
    )
    write_section(
        ROOT / "docs" / "benchmarks.md",
        "engine",
        facts,
        command.strip(),
        [asdict(r) for r in results],
    )
    print(f"# wrote {out.relative_to(ROOT)} and docs/benchmarks.md")


if __name__ == "__main__":
    main()
