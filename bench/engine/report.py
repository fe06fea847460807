"""Recording figures: the machine they came from, JSON under bench/results, and
sections of docs/benchmarks.md between named markers."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.engine.preload import PG

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results"

HEAD = """# Benchmarks

Every figure here was produced by a command in `bench/`, on the machine it names. The
test suite asserts behaviour, never time; these pages are where speed is recorded.
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "unknown"


async def _pg_version() -> str:
    try:
        conn = await asyncpg.connect(PG, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return "unreachable"
    try:
        return str(await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)
    return done.stdout.strip()


def int_list(text: str) -> list[int]:
    """A command line's comma-separated integers (`"1,16,64"`); empty parts skipped."""
    return [int(x) for x in text.split(",") if x]


def machine() -> dict[str, str]:
    """What the figures were measured on, and at which commit."""
    commit = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain", "--", "src"):
        commit += " (with uncommitted changes in src/)"
    return {
        "cpu": _cpu_model(),
        "cores": str(len(os.sched_getaffinity(0))),
        "memory": _memory(),
        "python": platform.python_version(),
        "postgresql": asyncio.run(_pg_version()),
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit,
    }


def machine_line(facts: dict[str, str]) -> str:
    return (
        f"Machine: {facts['cpu']}, {facts['cores']} cores (`nproc`), {facts['memory']} RAM; "
        f"Python {facts['python']}, PostgreSQL {facts['postgresql']} (same host), "
        f"SQLite {facts['sqlite']}. Measured {facts['date']} at commit {facts['commit']}."
    )


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def replace_section(name: str, body: str, path: Path = DOC) -> None:
    """Put `body` between `<!-- name:start -->` and `<!-- name:end -->` in `path`,
    keeping everything else; append the section if it is not there yet."""
    text = path.read_text() if path.exists() else HEAD
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def table(header: list[str], align: str, rows: list[list[str]]) -> list[str]:
    """A Markdown table; `align` has one `l` or `r` per column."""
    rule = ["---" if a == "l" else "---:" for a in align]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(rule) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
