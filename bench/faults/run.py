"""`python -m bench.faults`: run every fault scenario under load, write the figures.

Everything it stops is its own: a PostgreSQL cluster it creates (`initdb` into a
temporary directory, on a free port), a redis-server, small filesystems it mounts
(root is needed for `mount`). The default run takes about four minutes on 2 vCPUs;
`--quick` about one and a half.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.faults import scenarios
from bench.faults.services import postgres_binaries, private_postgres

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("crash", "postgres", "redis", "sqlite")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer kills, shorter outages")
    parser.add_argument(
        "--only", action="append", choices=NAMES, help="run only this scenario (repeatable)"
    )
    parser.add_argument("--devices", type=int, default=16, help="chains in the crash scenario")
    parser.add_argument("--kills", type=int, help="worker kills (default 30; quick 20)")
    parser.add_argument("--outage", type=float, help="seconds a store stays away (default 5)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / f"faults-{datetime.now(UTC):%Y-%m-%d}.json",
    )
    args = parser.parse_args(argv)
    args.kills = args.kills or (20 if args.quick else 30)
    args.outage = args.outage or (3.0 if args.quick else 5.0)
    return args


def _machine() -> dict[str, Any]:
    binaries = postgres_binaries()
    postgres = (
        subprocess.run(
            [str(binaries / "postgres"), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if binaries
        else None
    )
    redis = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split(" sha=")[0]
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postgres": postgres,
        "redis": redis.strip(),
    }


def _run(name: str, scenario: Callable[[], scenarios.Result]) -> scenarios.Result:
    print(f"[faults] {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    result = scenario()
    result.figures["scenario_seconds"] = round(time.monotonic() - started, 1)
    verdict = "ok" if not result.violations else f"{len(result.violations)} violation(s)"
    print(f"[faults] {name}: {verdict}", file=sys.stderr, flush=True)
    for violation in result.violations[:10]:
        print(f"[faults]   {violation}", file=sys.stderr)
    return result


def run(args: argparse.Namespace, workdir: Path) -> list[scenarios.Result]:
    only = set(args.only or NAMES)
    results: list[scenarios.Result] = []
    if only & {"crash", "redis"}:
        # Their database is a cluster of their own too: nothing shared is loaded.
        with private_postgres() as cluster:
            if "crash" in only:
                # Directly, then with PostgreSQL's answers 5 ms away: a kill then mostly
                # falls between a rotation's commit and its answer.
                for delay in (0.0, 0.005):
                    database = scenarios.shared_postgres_schema(
                        cluster.url, f"crash_{round(delay * 1000)}ms"
                    )
                    results.append(
                        _run(
                            f"crash mid-rotation (database {delay * 1000:.0f} ms away)",
                            lambda database=database, delay=delay: scenarios.crash_mid_rotation(
                                database,
                                workdir,
                                devices=args.devices,
                                kills=args.kills,
                                seed=args.seed,
                                db_delay=delay,
                            ),
                        )
                    )
            if "redis" in only:
                database = scenarios.shared_postgres_schema(cluster.url, "redis")
                results.append(
                    _run("redis stopped", lambda: scenarios.redis_stopped(database, workdir))
                )
    if "postgres" in only:
        for mode in ("immediate", "fast"):
            results.append(
                _run(
                    f"postgres stopped ({mode})",
                    lambda mode=mode: scenarios.postgres_stopped(
                        mode, workdir, devices=8, outage=args.outage
                    ),
                )
            )
    if "sqlite" in only:
        for fault in scenarios.FAULTS:
            results.append(
                _run(
                    f"sqlite disk {fault}",
                    lambda fault=fault: scenarios.sqlite_disk(
                        fault, workdir, devices=8, outage=args.outage
                    ),
                )
            )
    return results


def summary(results: list[scenarios.Result]) -> str:
    """One line per scenario: the figures a reader looks for first."""
    lines = ["| scenario | key figures | violations |", "| --- | --- | ---: |"]
    for result in results:
        f = result.figures
        if result.name.startswith("crash_mid_rotation"):
            key = (
                f"{f['kills']} kills, {f['rotations']} rotations, "
                f"{f['requests_failed_during_a_kill']} requests cut by a kill (all retried), "
                f"replays {f['replays_recorded']}, chains continued {f['chains_continued']}, "
                f"respawn median {f['worker_respawn_ms']['median']} ms"
            )
        elif result.name.startswith("postgres_stopped"):
            key = (
                f"first 503 {f['first_503_after_stop_ms']} ms after the stop, "
                f"{f['answers_during_outage']} answers in the outage, max "
                f"{f['max_latency_during_outage_ms']} ms; first 200 after start "
                f"{f['first_200_after_start_command_ms']} ms; chains {f['chains_continued']}"
            )
        elif result.name == "redis_stopped":
            key = (
                f"B after A's {f['limit_per_minute']}: with Redis "
                f"{f['probe_with_redis']['next_at_b']}, without "
                f"{f['probe_without_redis']['next_at_b']}, back "
                f"{f['probe_redis_back']['next_at_b']}; {f['answers_not_200']} load answers "
                f"not 200; {f['log_warnings']} log warnings"
            )
        else:
            key = (
                f"first 503 {f['first_503_after_break_ms']} ms, writes 503 "
                f"{f['writes_503_during_fault']}/{f['writes_during_fault']}, integrity "
                f"{f['integrity_check']}, on the broken disk: {f['start_on_the_broken_disk']}; "
                f"restart {f['restart_ms']} ms, chains {f['chains_continued']}, logins stored "
                f"{f['login_sessions_answered_and_stored']}"
            )
        lines.append(f"| {result.name} | {key} | {len(result.violations)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="keyturn-faults-") as work:
        started = datetime.now(UTC)
        results = run(args, Path(work))
    document = {
        "generated": started.isoformat(timespec="seconds"),
        "command": "python -m bench.faults " + " ".join(argv or sys.argv[1:]),
        "machine": _machine(),
        "scenarios": [r.as_json() for r in results],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(summary(results))
    print(f"[faults] wrote {args.out}", file=sys.stderr)
    return 1 if any(r.violations for r in results) else 0
