"""Rotations per second and latency through the engine and the store, no HTTP.

    .venv/bin/python -m bench.engine --processes 1,2   # the full matrix (~10 minutes)
    .venv/bin/python -m bench.engine --quick           # a smoke run (~30 s, writes nothing)

For each store and each number of preloaded live sessions, C concurrent callers
(asyncio tasks, split over P processes) rotate their own refresh-token chains through
`Refresher.refresh` for a fixed time (see `bench.engine.run`). Prints one line per
configuration; unless `--no-write` (or `--quick`), writes
`bench/results/engine-<date>.json` and the `engine` section of docs/benchmarks.md.
PostgreSQL: a fresh schema in postgresql://root@127.0.0.1:5432/test, dropped at the end.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench.engine.preload import Target, dispose, prepare
from bench.engine.report import (
    ROOT,
    int_list,
    machine,
    machine_line,
    replace_section,
    table,
    write_json,
)
from bench.engine.run import Result, measure
from keyturn.settings import Settings

STORE_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stores", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--sessions", default="100000,1000000", help="live sessions preloaded")
    parser.add_argument("--concurrency", default="1,16,64", help="callers in all")
    parser.add_argument(
        "--processes",
        default="1",
        help="OS processes sharing the callers (each count runs every concurrency >= it)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per line")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=Settings.model_fields["db_pool_size"].default,
        help="PostgreSQL connections per process (default: keyturn's default)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="seconds to wait, before each line, for other jobs to leave the CPU idle",
    )
    parser.add_argument("--seed", type=int, default=2026, help="which sessions are rotated")
    parser.add_argument("--quick", action="store_true", help="10,000 sessions, 2 s, 1 and 16")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.concurrency, args.processes = "10000", "1,16", "1"
        args.seconds, args.warmup, args.no_write, args.quiet_wait = 2.0, 0.5, True, 0.0
    return args


def line(r: Result) -> str:
    errors = ", ".join(f"{k}: {v}" for k, v in r.errors.items()) or "0"
    return (
        f"{r.store:8} sessions={r.sessions:>9,} processes={r.processes} "
        f"concurrency={r.concurrency:>3} rotations/s={r.rotations_per_second:7.0f} "
        f"p50={r.p50_ms:7.2f}ms p90={r.p90_ms:7.2f}ms p99={r.p99_ms:7.2f}ms "
        f"max={r.max_ms:7.2f}ms errors={errors} (machine {r.busy_before:.0f} % busy before)"
    )


def section(
    facts: dict[str, str], command: str, targets: list[Target], results: list[Result]
) -> str:
    preloads = "; ".join(
        f"{STORE_NAMES[t.store]} {t.sessions:,} in {t.preload_seconds:.0f} s" for t in targets
    )
    rows = [
        [
            STORE_NAMES[r.store],
            f"{r.sessions:,}",
            str(r.processes),
            str(r.concurrency),
            f"{r.rotations_per_second:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p90_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.max_ms:.1f}",
            ", ".join(f"{k}: {v}" for k, v in r.errors.items()) or "0",
        ]
        for r in results
    ]
    noisy = [r for r in results if r.busy_before > 15]
    noise = (
        f"{len(noisy)} of {len(results)} lines started while other jobs kept the machine "
        f"over 15 % busy (see `busy_before` in the JSON); compare those with care."
        if noisy
        else "Every line started on an idle machine (under 15 % CPU)."
    )
    seconds = results[0].seconds if results else 0
    pool = results[0].pool_size if results else 0
    return "\n".join(
        [
            "## Engine (no HTTP)",
            "",
            "C callers rotate their own refresh-token chains through `Refresher.refresh` "
            "and the store: decode and check the token, read the client, the session and "
            "its user and advance the generation if the rules rotate it (one store "
            "operation, committed), sign an ES256 access token, "
            "derive the successor. Every answer is checked. The sessions rotated are drawn "
            "at random from the preloaded live sessions (four per user), so every lookup "
            "goes through a large table and index. The callers are asyncio tasks split "
            "evenly over `processes` OS processes (one Python process keeps one core "
            f"busy at most); {seconds:.0f} s measured per line after a warm-up; "
            f"PostgreSQL pool of {pool} connections per process (keyturn's default); "
            "grace window 10 s. Latency is per rotation, as the caller sees it.",
            "",
            machine_line(facts),
            "",
            f"Bulk preload (rows, indexes, ANALYZE): {preloads}. {noise}",
            "",
            "Reproduce from the repository root (PostgreSQL at "
            "`postgresql://root@127.0.0.1:5432/test`, trust authentication):",
            "",
            "```sh",
            command,
            "```",
            "",
            *table(
                [
                    "store",
                    "live sessions",
                    "processes",
                    "concurrency",
                    "rotations/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "errors",
                ],
                "lrrrrrrrrl",
                rows,
            ),
        ]
    )


def main(argv: list[str]) -> None:
    args = parse(argv)
    levels = int_list(args.concurrency)
    plan = [(p, c) for p in int_list(args.processes) for c in levels if c >= p]
    rng = random.Random(args.seed)
    results: list[Result] = []
    targets: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="keyturn-bench-") as folder:
        for store in args.stores.split(","):
            for size in int_list(args.sessions):
                target = prepare(store, size, Path(folder), args.pool_size)
                targets.append(target)
                try:
                    for processes, concurrency in plan:
                        result = measure(
                            target,
                            processes,
                            concurrency,
                            args.seconds,
                            args.warmup,
                            rng,
                            args.quiet_wait,
                        )
                        results.append(result)
                        print(line(result), flush=True)
                finally:
                    dispose(target)
    if args.no_write:
        return
    facts = machine()
    command = shlex.join([".venv/bin/python", "-m", "bench.engine", *argv])
    out = write_json(
        f"engine-{facts['date']}.json",
        {
            "machine": facts,
            "command": command,
            "preload_seconds": {f"{t.store} {t.sessions}": t.preload_seconds for t in targets},
            "results": [asdict(r) for r in results],
        },
    )
    replace_section("engine", section(facts, command, targets, results))
    print(f"# wrote {out.relative_to(ROOT)} and docs/benchmarks.md", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
