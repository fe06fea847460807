"""keyturn and its peers side by side: refresh-token rotations over HTTP.

    bench/run                 # the full comparison (~20 minutes), docs and JSON
    bench/run --quick         # a ~5 s smoke run: keyturn on SQLite, one line, JSON only
    bench/run --quick --out /tmp/x

Installs the peers if missing (`bench/peers/install`), then for each system, store and
worker count: seeds N refresh tokens through the system's own models, starts it on a
loopback port, drives it with `bench.load` at each concurrency (fresh chains for each
line), and stops it by its pid. Before each line it waits for the machine to be idle
and records how busy it was. The full run also measures the generator's ceiling and
PostgreSQL's single-row commit rate and the floor of a rotation on keyturn's stack
(`bench.compare.limits`). Writes
`OUT/compare-<date>.json`; unless `--quick` or `--docs ''`, the `compare` section of
docs/benchmarks.md and its plots under docs/img/. A full run ends with the profile of
the server under load (`bench.compare.profile`), the cost breakdown of one rotation
(`bench.engine.breakdown`) and what the web layer costs it (`bench.engine.web`), each
writing its own JSON and section (`--no-profile` skips them).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.compare import bound, plots, profile
from bench.compare.limits import ceiling, floor, pgbench
from bench.compare.procs import Window
from bench.compare.report import section
from bench.compare.scale import scale
from bench.compare.systems import (
    DOT,
    FULL,
    KEYTURN,
    LAUNCHERS,
    OIDC,
    OIDC_PROVIDER,
    PEER_PYTHON,
    PEERS,
    SIMPLEJWT,
    Spec,
)
from bench.engine import breakdown
from bench.engine.preload import PG
from bench.engine.quiet import wait_for_quiet
from bench.engine.report import DOC, RESULTS, ROOT, int_list, machine, replace_section
from bench.load.drive import line, run_load


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only", default="", help="labels to run, comma-separated substrings (e.g. keyturn)"
    )
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per line")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured, first")
    parser.add_argument("--tokens", type=int, default=10_000, help="refresh tokens seeded")
    parser.add_argument("--generator-processes", type=int, default=1)
    parser.add_argument("--quiet-wait", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--docs", default=str(DOC), help="Markdown file to update ('' = none)")
    parser.add_argument(
        "--no-limits", action="store_true", help="skip the ceiling, the floor and pgbench"
    )
    parser.add_argument(
        "--scale",
        default="100000,1000000",
        help="live-session counts keyturn is preloaded with for the scale lines ('' = none)",
    )
    parser.add_argument("--scale-concurrency", type=int, default=64)
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the server profile (bench.compare.profile), the cost breakdown "
        "(bench.engine.breakdown) and the web layer's cost (bench.engine.web) that a full "
        "run ends with",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: keyturn, SQLite, 16")
    args = parser.parse_args(argv)
    if args.quick:
        args.only, args.concurrency, args.seconds, args.warmup = "keyturn · sqlite · 1w", "16", 3, 1
        args.tokens, args.quiet_wait, args.docs, args.no_limits = 200, 0.0, "", True
        args.scale, args.no_profile = "", True
    if args.docs == "":
        args.no_profile = True  # they write to the docs
    return args


def _version(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def versions(specs: list[Spec]) -> dict[str, str]:
    import starlette
    import uvicorn

    found = {
        "keyturn": "0.1.0 (this repository)",
        "uvicorn": uvicorn.__version__,
        "starlette": starlette.__version__,
        "python": platform.python_version(),
    }
    if any(s.system in (DOT, SIMPLEJWT) for s in specs):
        found["django peers"] = _version(
            [
                str(PEER_PYTHON),
                "-c",
                "import django, oauth2_provider, rest_framework, rest_framework_simplejwt as s, "
                "gunicorn, psycopg, importlib.metadata as m; "
                "print(f'Django {django.__version__}, django-oauth-toolkit "
                "{oauth2_provider.__version__}, djangorestframework {rest_framework.__version__}, "
                'djangorestframework-simplejwt {m.version("djangorestframework-simplejwt")}, '
                "gunicorn {gunicorn.__version__}, psycopg {psycopg.__version__}')",
            ]
        )
    if any(s.system == OIDC_PROVIDER for s in specs):
        package = json.loads((OIDC / "node_modules/oidc-provider/package.json").read_text())
        pg = json.loads((OIDC / "node_modules/pg/package.json").read_text())
        node = _version(["node", "--version"])
        found["oidc-provider"] = f"oidc-provider {package['version']}, pg {pg['version']}, "
        found["oidc-provider"] += f"Node.js {node}"
    return found


PG_SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes")


def postgres_settings() -> dict[str, str]:
    """The PostgreSQL settings that decide what a commit costs."""
    listed = ", ".join(f"'{name}'" for name in PG_SETTINGS)
    query = f"SELECT name, setting FROM pg_settings WHERE name IN ({listed}) ORDER BY name"
    done = subprocess.run(["psql", PG, "-Atc", query], capture_output=True, text=True, check=False)
    return dict(row.split("|", 1) for row in done.stdout.split() if "|" in row)


def measure_spec(spec: Spec, args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    levels = int_list(args.concurrency)
    rows: list[dict[str, Any]] = []
    with LAUNCHERS[spec.system](spec, args.tokens, folder) as running:
        offset = 0
        for c in levels:
            block = running.tokens[offset : offset + 2 * c]  # c chains, c spares
            offset += 2 * c
            busy = wait_for_quiet(patience=args.quiet_wait)
            with Window(running.pid, args.warmup, args.seconds) as window:
                result = run_load(
                    running.endpoint,
                    block,
                    c,
                    args.seconds,
                    args.warmup,
                    min(args.generator_processes, c),
                )
            print(line(result, f"{spec.label:36} "), flush=True)
            rows.append(
                {
                    "system": spec.system,
                    "store": spec.store,
                    "workers": spec.workers,
                    "label": spec.label,
                    **asdict(result),
                    "server_cpu_percent": window.server_percent,
                    "server_process_cpu_percents": window.process_percents,
                    "machine_busy_percent": window.machine_percent,
                    "server_peak_rss_mb": window.peak_rss_mb,
                    "busy_before": round(busy, 1),
                    "server_command": running.command,
                    "endpoint": running.endpoint.url.rsplit(":", 1)[1].split("/", 1)[1],
                }
            )
    return rows


def _profile_and_costs(args: argparse.Namespace, payload: dict[str, Any], out: Path) -> None:
    """The profile under load, the cost breakdown of one rotation, what the web layer
    costs it, and from the breakdown and the floor how close to the floor a rotation
    can come (added to the JSON at `out` and the docs)."""
    profile.main([] if Path(args.docs) == DOC else ["--docs", args.docs])
    # It writes to docs/benchmarks.md only; elsewhere it prints.
    steps = breakdown.main([] if Path(args.docs) == DOC else ["--no-write"])
    if "floor" in payload["limits"]:
        payload["bound"] = bound.rows(payload["limits"]["floor"], steps, payload["results"])
        out.write_text(json.dumps(payload, indent=2) + "\n")
        if args.docs:
            body = bound.section(payload["bound"], payload["command"])
            replace_section("bound", body, Path(args.docs))
    # A process of its own: it sets up prometheus-client's multiprocess mode, which
    # must come before prometheus-client is first imported.
    web = [sys.executable, "-m", "bench.engine.web"]
    subprocess.run(web if Path(args.docs) == DOC else [*web, "--no-write"], check=True)


def main(argv: list[str]) -> int:
    args = parse(argv)
    wanted = [w for w in args.only.split(",") if w]
    specs = [s for s in FULL if not wanted or any(w in s.label for w in wanted)]
    if any(s.system != KEYTURN for s in specs):
        subprocess.run([str(PEERS / "install")], check=True)
    facts = machine()
    started = datetime.now(UTC)
    limits: dict[str, Any] = {}
    if not args.no_limits:
        limits["pgbench"] = [asdict(r) for r in pgbench([16, 64], 10, args.quiet_wait)]
        limits["ceiling"] = ceiling([1, 16, 64], args.seconds, args.warmup, args.quiet_wait)
        limits["floor"] = floor([16, 64], args.seconds, args.warmup, args.quiet_wait)
    rows: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="keyturn-compare-") as folder:
        for spec in specs:
            try:
                rows += measure_spec(spec, args, Path(folder))
            except Exception:
                if args.quick:
                    raise
                failures[spec.label] = traceback.format_exc(limit=3)
                print(f"# {spec.label} failed:\n{failures[spec.label]}", flush=True)
        if args.scale:
            sizes = int_list(args.scale)
            limits["scale"] = scale(
                ["postgres", "sqlite"],
                sizes,
                args.scale_concurrency,
                args.seconds,
                args.warmup,
                args.quiet_wait,
                Path(folder),
            )
    command = shlex.join(["bench/run", *argv])
    payload = {
        "machine": facts,
        "started": started.isoformat(timespec="seconds"),
        "command": command,
        "versions": versions(specs),
        "postgresql_settings": postgres_settings(),
        "settings": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "tokens": args.tokens,
            "generator_processes": args.generator_processes,
        },
        "results": rows,
        "limits": limits,
        "failures": failures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"compare-{facts['date']}.json"
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"# wrote {out}", flush=True)
    if args.docs:
        doc = Path(args.docs)
        images = doc.parent / "img"
        images.mkdir(parents=True, exist_ok=True)
        caption = (
            f"{facts['cpu']}, {facts['cores']} cores shared by server, database and load "
            f"generator; {facts['date']}, keyturn {facts['commit']}; {args.seconds:g} s per "
            f"point after {args.warmup:g} s warm-up. `{command}`"
        )
        plots.throughput(rows, caption, images / "compare-throughput.png")
        plots.latency(rows, caption, images / "compare-latency.png")
        body = section(payload, out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)
        replace_section("compare", body, doc)
        print(f"# wrote {doc} and {images}/compare-*.png", flush=True)
    if not args.no_profile:
        _profile_and_costs(args, payload, out)
    errors = sum(sum(r["errors"].values()) for r in rows)
    return 1 if failures or (args.quick and errors) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
