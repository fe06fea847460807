"""The two ceilings the comparison is read against.

- The load generator's own: the same generator against trivial token endpoints that do
  no work (`bench.load.trivial`), with one and two generator processes, and `wrk` (C,
  one fixed request) against the same endpoint where it is installed. The generator's
  CPU per request says what share of the two cores it takes from a real server.
- PostgreSQL's: `pgbench` with a custom script of one single-row `UPDATE` per
  transaction (autocommit), clients on their own random rows of 10,000: the commit
  rate this machine's PostgreSQL reaches, which bounds any system that commits once
  per rotation.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.compare.procs import Window, answers, free_port, server
from bench.engine.preload import PG
from bench.engine.quiet import wait_for_quiet
from bench.engine.report import ROOT
from bench.load.drive import line, run_load
from bench.load.shapes import Endpoint

PGBENCH_ROWS = 10_000
PGBENCH_SCRIPT = """\\set id random(1, {rows})
UPDATE {schema}.counters SET n = n + 1 WHERE id = :id;
"""


@dataclass(frozen=True, slots=True)
class PgbenchResult:
    clients: int
    threads: int
    seconds: int
    tps: float
    latency_ms: float
    busy_before: float
    command: str


def pgbench(clients: list[int], seconds: int, quiet: float) -> list[PgbenchResult]:
    schema = f"bench_pgbench_{uuid.uuid4().hex[:6]}"
    setup = [
        f"CREATE SCHEMA {schema}",
        f"CREATE TABLE {schema}.counters (id int PRIMARY KEY, n bigint NOT NULL) "
        "WITH (fillfactor = 80)",
        f"INSERT INTO {schema}.counters SELECT i, 0 FROM generate_series(1, {PGBENCH_ROWS}) i",
        f"VACUUM ANALYZE {schema}.counters",
        "CHECKPOINT",
    ]
    statements = [arg for sql in setup for arg in ("-c", sql)]
    subprocess.run(["psql", PG, "-q", "-v", "ON_ERROR_STOP=1", *statements], check=True)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="keyturn-pgbench-") as folder:
            script = Path(folder) / "update.sql"
            script.write_text(PGBENCH_SCRIPT.format(rows=PGBENCH_ROWS, schema=schema))
            for c in clients:
                busy = wait_for_quiet(patience=quiet)
                command = ["pgbench", "-n", "-M", "prepared", "-f", str(script), "-c", str(c)]
                command += ["-j", "2", "-T", str(seconds), PG]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                tps = re.search(r"tps = ([\d.]+)", done.stdout)
                latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
                shown = command.copy()
                shown[shown.index(str(script))] = "update.sql"
                results.append(
                    PgbenchResult(
                        clients=c,
                        threads=2,
                        seconds=seconds,
                        tps=round(float(tps.group(1)), 1) if tps else 0.0,
                        latency_ms=round(float(latency.group(1)), 3) if latency else 0.0,
                        busy_before=round(busy, 1),
                        command=" ".join(shown),
                    )
                )
                print(f"# pgbench clients={c}: {results[-1].tps:,.0f} commits/s", flush=True)
    finally:
        subprocess.run(
            [
                "psql",
                PG,
                "-q",
                "-c",
                f"SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE",
            ],
            check=False,
        )
    return results


def _wrk(port: int, seconds: int, connections: int) -> float | None:
    if not shutil.which("wrk"):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(
            'wrk.method = "POST"\n'
            'wrk.body = "grant_type=refresh_token&refresh_token=kt_rt_x&client_id=bench"\n'
            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        )
    try:
        done = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "-s", lua.name,
             f"http://127.0.0.1:{port}/oauth/token"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        Path(lua.name).unlink()
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    return round(float(found.group(1)), 1) if found else None


def ceiling(levels: list[int], seconds: float, warmup: float, quiet: float) -> list[dict[str, Any]]:
    """The generator against the trivial endpoints; one row per (server, generator
    processes, concurrency), plus `wrk` against the raw one."""
    rows: list[dict[str, Any]] = []
    tokens = [f"kt_rt_start{i}" for i in range(4 * max(levels))]
    for kind in ("raw", "starlette"):
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="keyturn-ceiling-") as folder:
            command = [sys.executable, "-m", "bench.load.trivial", "--port", str(port)]
            with server(
                [*command, "--kind", kind],
                env={},
                cwd=ROOT,
                log=Path(folder) / "trivial.log",
                ready=answers("127.0.0.1", port, "/oauth/token", "POST"),
            ) as proc:
                endpoint = Endpoint(f"http://127.0.0.1:{port}/oauth/token", "oauth", "bench")
                for processes in (1, 2):
                    for c in levels:
                        if c < processes:
                            continue
                        busy = wait_for_quiet(patience=quiet)
                        with Window(proc.pid, warmup, seconds) as window:
                            result = run_load(endpoint, tokens, c, seconds, warmup, processes)
                        print(line(result, f"trivial {kind:9} "), flush=True)
                        rows.append(
                            {
                                "server": kind,
                                "client": "bench.load",
                                **asdict(result),
                                "server_cpu_percent": window.server_percent,
                                "machine_busy_percent": window.machine_percent,
                                "busy_before": round(busy, 1),
                            }
                        )
                if kind == "raw":
                    wait_for_quiet(patience=quiet)
                    for c in (16, 64):
                        rate = _wrk(port, int(seconds), c)
                        if rate is not None:
                            print(f"trivial raw       wrk concurrency={c}: {rate:,.0f}/s")
                            rows.append(
                                {
                                    "server": kind,
                                    "client": "wrk -t 1",
                                    "concurrency": c,
                                    "rotations_per_second": rate,
                                }
                            )
    return rows


def floor(levels: list[int], seconds: float, warmup: float, quiet: float) -> list[dict[str, Any]]:
    """The floor of a rotation on keyturn's stack (`bench.load.trivial` kinds
    `floor-sqlite` and `floor-postgres`: a rotation's database work, done as keyturn does
    it, behind a Starlette route, one uvicorn worker), driven like the real systems."""
    rows: list[dict[str, Any]] = []
    tokens = [f"kt_rt_start{i}" for i in range(4 * max(levels))]
    for store in ("sqlite", "postgres"):
        port = free_port()
        schema = f"bench_floor_{uuid.uuid4().hex[:6]}"
        with tempfile.TemporaryDirectory(prefix="keyturn-floor-") as folder:
            target = PG if store == "postgres" else str(Path(folder) / "floor.db")
            command = [sys.executable, "-m", "bench.load.trivial", "--port", str(port)]
            command += ["--kind", f"floor-{store}", "--target", target, "--schema", schema]
            try:
                with server(
                    command,
                    env={},
                    cwd=ROOT,
                    log=Path(folder) / "floor.log",
                    ready=answers("127.0.0.1", port, "/oauth/token", "POST"),
                ) as proc:
                    endpoint = Endpoint(f"http://127.0.0.1:{port}/oauth/token", "oauth", "bench")
                    for c in levels:
                        busy = wait_for_quiet(patience=quiet)
                        with Window(proc.pid, warmup, seconds) as window:
                            result = run_load(endpoint, tokens, c, seconds, warmup, 1)
                        print(line(result, f"floor {store:9} "), flush=True)
                        rows.append(
                            {
                                "store": store,
                                **asdict(result),
                                "server_cpu_percent": window.server_percent,
                                "machine_busy_percent": window.machine_percent,
                                "busy_before": round(busy, 1),
                            }
                        )
            finally:
                if store == "postgres":
                    drop = f"DROP SCHEMA IF EXISTS {schema} CASCADE"
                    quiet_drop = f"SET client_min_messages = warning; {drop}"
                    subprocess.run(["psql", PG, "-q", "-c", quiet_drop], check=False)
    return rows
