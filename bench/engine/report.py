"""Writing benchmark figures into docs/benchmarks.md between named markers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEAD = """# Benchmarks

Every figure here was produced by a command in `bench/`, on the machine it names. The
test suite asserts behaviour, never time; these pages are where speed is recorded.
"""


def replace_section(path: Path, name: str, body: str) -> None:
    """Put `body` between `<!-- name:start -->` and `<!-- name:end -->` in `path`."""
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


def write_section(
    path: Path, name: str, machine: dict[str, str], command: str, results: list[dict[str, Any]]
) -> None:
    lines = [
        "## Engine: rotations through the engine and store, no HTTP",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}; "
        f"Python {machine['python']}, PostgreSQL {machine['postgresql']}, "
        f"SQLite {machine['sqlite']}. Date {machine['date']}, commit {machine['commit']}.",
        "",
        f"Reproduce: `.venv/bin/{command}` (PostgreSQL at `KEYTURN_BENCH_PG`, default "
        "`postgresql://root@127.0.0.1:5432/test`). Each caller rotates its own chain of "
        "refresh tokens (read session and user, compare-and-swap the generation, sign an "
        "ES256 access token, derive the successor) for the stated time; one Python process "
        "drives one core, so `processes` shows how the store scales beyond one.",
        "",
        "| store | live sessions | processes | concurrency | rotations/s | p50 ms | p90 ms "
        "| p99 ms | max ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
        lines.append(
            f"| {r['store']} | {r['sessions']:,} | {r['processes']} | {r['concurrency']} "
            f"| {r['rotations_per_second']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['max_ms']:.2f} | {errors} |"
        )
    replace_section(path, name, "\n".join(lines))
