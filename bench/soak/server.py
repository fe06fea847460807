"""keyturn served as in production, on a fresh PostgreSQL schema, and its processes
watched through /proc."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

KEYTURN = [sys.executable, "-m", "keyturn"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Deployment:
    """What the server was started with: every setting not at its default."""

    database_url: str
    schema: str
    secret: str = field(repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a keyturn process: nothing of the caller's KEYTURN_*."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
        return {
            **clean,
            "KEYTURN_DATABASE_URL": self.database_url,
            "KEYTURN_DB_SCHEMA": self.schema,
            "KEYTURN_SECRET_KEY": self.secret,
            **extra,
        }

    def keyturn(self, *args: str, stdin: str | None = None, **extra: str) -> str:
        """Run one `keyturn` command; its standard output."""
        done = subprocess.run(
            [*KEYTURN, *args],
            input=stdin,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"keyturn {' '.join(args)}: {done.stderr.strip()[-500:]}")
        return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def create_schema(url: str) -> str:
    schema = f"soak_{secrets.token_hex(5)}"
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return schema


async def drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@contextmanager
def serving(
    deployment: Deployment, port: int, workers: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`keyturn serve --workers N` until the block ends (SIGTERM, then wait)."""
    workers_arg = ["--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*KEYTURN, "serve", "--host", "127.0.0.1", "--port", str(port), *workers_arg],
            env=deployment.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"keyturn serve exited: {log.read_text()[-2000:]}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("keyturn serve not ready within 60 s")
                time.sleep(0.3)
            # Every worker up, not only the first to answer.
            while len(workers_of(proc.pid)) < workers and time.monotonic() < deadline:
                time.sleep(0.3)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(p) for p in _read(f"{task}/children").split()]
    return found


def workers_of(supervisor: int) -> list[int]:
    """uvicorn's worker processes: the supervisor's children started by
    multiprocessing's spawn (not its resource tracker)."""
    found = []
    for pid in children(supervisor):
        cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            found.append(pid)
    return sorted(found)


def rss_mib(pid: int) -> float | None:
    fields = _read(f"/proc/{pid}/statm").split()
    return round(int(fields[1]) * PAGE_KIB / 1024, 1) if fields else None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process (proc(5): fields 14 and 15)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    after = stat.rpartition(")")[2].split()
    return (int(after[11]) + int(after[12])) / CLOCK_TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in _read("/proc/stat").splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def log_levels(log: Path) -> tuple[int, dict[str, int], list[str]]:
    """Lines of the server's log, their count by level and the first few above INFO."""
    lines = 0
    levels: dict[str, int] = {}
    notable: list[str] = []
    with log.open(errors="replace") as text:
        for line in text:
            lines += 1
            try:
                level = str(json.loads(line).get("level", "?"))
            except (ValueError, AttributeError):
                level = "text"
            levels[level] = levels.get(level, 0) + 1
            if level not in ("INFO", "DEBUG") and len(notable) < 10:
                notable.append(line.strip()[:400])
    return lines, levels, notable
