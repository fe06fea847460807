"""Where a rotation's time goes inside a real keyturn server, under load over HTTP.

    .venv/bin/python -m bench.compare.profile              # SQLite and PostgreSQL
    .venv/bin/python -m bench.compare.profile --stores postgres --seconds 20

For each store: `keyturn serve --workers 1` on a new database, its sessions opened by
logins (`bench.compare.systems.keyturn`, as `bench/run` starts it), driven by
`bench.load` at 16 connections, while `py-spy` samples the server
process from outside (`--rate` per second, CPU-busy samples only, no changes to the
server). Each sampled stack is put in one category by its deepest frame that belongs to
one (`CATEGORIES`, first match from the leaf); JSON encoding is counted under the part
of the server that asked for it. Writes `bench/results/profile-<date>.json` and the
`profile` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.compare.systems import KEYTURN, Spec, keyturn
from bench.engine.quiet import wait_for_quiet
from bench.engine.report import DOC, machine, machine_line, replace_section, table, write_json
from bench.load.drive import line, run_load

# (category, substrings of a py-spy frame `function (path:line)`), most specific first.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (
        "access-token signing (ES256)",
        ("keyturn/crypto/compact_jws", "keyturn/crypto/access_tokens", "joserfc/"),
    ),
    ("refresh-token decode and encode (HMAC)", ("keyturn/crypto/refresh_codec",)),
    (
        "logs and metrics",
        ("keyturn/observability/", "prometheus_client/", "logging/", "keyturn/web/metrics"),
    ),
    ("database: driver, queries, commit", ("asyncpg/", "keyturn/storage/", "sqlite3")),
    ("rules and service (decide, build values)", ("keyturn/core/", "keyturn/service/")),
    # keyturn's uvicorn protocol is where the response is written to the socket: that
    # is the HTTP server's work, as it was before keyturn joined the two writes.
    (
        "HTTP server (uvicorn, httptools parsing, the response's socket write)",
        ("uvicorn/", "httptools/", "h11/", "keyturn/web/http_protocol"),
    ),
    ("keyturn HTTP layer (form, client auth, response)", ("keyturn/web/",)),
    ("framework (Starlette routing and middleware)", ("starlette/",)),
    ("event loop and sockets (uvloop)", ("uvloop/", "asyncio/")),
]
OTHER = "other"
NATIVE = "native code, no Python frame (py-spy:0)"  # a frame, shaped like the others
ORDER = [name for name, _ in CATEGORIES] + [OTHER]


def categorise(stack: list[str]) -> str:
    """The category of a stack (root first), by its deepest frame that has one."""
    for frame in reversed(stack):
        for name, marks in CATEGORIES:
            if any(mark in frame for mark in marks):
                return name
    return OTHER


def summarise(collapsed: str) -> tuple[Counter[str], Counter[str], int]:
    """Samples per category and per leaf frame in a py-spy raw (collapsed) text."""
    categories: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for row in collapsed.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        # With --subprocesses py-spy roots each stack at `process PID:"command line"`.
        frames = [f for f in stack.split(";") if not f.startswith("process ")] or [NATIVE]
        samples = int(count)
        total += samples
        categories[categorise(frames)] += samples
        name, _, where = frames[-1].partition(" (")
        leaves[f"{name} ({'/'.join(where.rsplit(':', 1)[0].split('/')[-2:])})"] += samples
    return categories, leaves, total


def profile_store(store: str, seconds: float, rate: int, folder: Path) -> dict[str, Any]:
    spec = Spec(KEYTURN, store, 1)
    with keyturn(spec, 200, folder) as running:
        busy = wait_for_quiet(patience=60)
        out = folder / f"profile-{store}.txt"
        command = ["py-spy", "record", "--rate", str(rate), "--format", "raw"]
        command += ["--output", str(out), "--duration", str(int(seconds))]
        command += ["--subprocesses", "--nonblocking", "--pid", str(running.pid)]
        spy = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            executable=str(Path(sys.executable).parent / "py-spy"),
        )
        result = run_load(running.endpoint, running.tokens, 16, seconds + 2, 1.0)
        spy.wait(timeout=seconds + 60)
        print(line(result, f"{spec.label} under py-spy "), flush=True)
    categories, leaves, total = summarise(out.read_text())
    return {
        "store": store,
        "samples": total,
        "rate": rate,
        "categories": {k: round(100 * categories[k] / max(total, 1), 1) for k in ORDER},
        "top_leaves": [
            [frame, round(100 * n / max(total, 1), 1)] for frame, n in leaves.most_common(12)
        ],
        "load": asdict(result),
        "busy_before": round(busy, 1),
    }


def section(payload: dict[str, Any], json_path: str) -> str:
    runs = payload["runs"]
    body = [[name] + [f"{r['categories'][name]:.1f} %" for r in runs] for name in ORDER]
    leaves = []
    for r in runs:
        listed = "; ".join(f"`{frame}` {share:.1f} %" for frame, share in r["top_leaves"][:8])
        leaves.append(f"- {STORES[r['store']]}: {listed}.")
    rates = ", ".join(
        f"{STORES[r['store']]} {r['load']['rotations_per_second']:,.0f} rotations/s "
        f"({r['samples']:,} samples)"
        for r in runs
    )
    return "\n".join(
        [
            "## Where the time goes in the server",
            "",
            "`keyturn serve --workers 1`, driven over HTTP by `bench.load` at 16 "
            "connections, sampled from outside by py-spy (CPU-busy samples only, "
            f"{runs[0]['rate']} per second): the share of the server process's CPU "
            "in each part of the path. A sample counts for the deepest frame on its stack "
            "that belongs to a part, so time in a library is charged to what keyturn "
            "called it for (JSON for a log line is under logs). The database part is the "
            "client side only: the driver, building and sending the query, parsing the "
            "answer; PostgreSQL's own CPU and the time waiting for it are not in the "
            f"process. During the profile: {rates}.",
            "",
            machine_line(payload["machine"]),
            "",
            "```sh",
            payload["command"],
            "```",
            "",
            *table(["part", *(STORES[r["store"]] for r in runs)], "l" + "r" * len(runs), body),
            "",
            "Busiest leaf frames (own time):",
            "",
            *leaves,
            "",
            f"Figures: `{json_path}`.",
        ]
    )


STORES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare.profile", description=__doc__)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--docs", default=str(DOC), help="Markdown file to update ('' = none)")
    args = parser.parse_args(argv)
    facts = machine()
    with tempfile.TemporaryDirectory(prefix="keyturn-profile-") as folder:
        runs = [
            profile_store(s, args.seconds, args.rate, Path(folder))
            for s in args.stores.split(",")
            if s
        ]
    payload = {
        "machine": facts,
        "command": " ".join([".venv/bin/python -m bench.compare.profile", *argv]),
        "runs": runs,
    }
    out = write_json(f"profile-{facts['date']}.json", payload)
    for r in runs:
        print(f"# {r['store']}: " + ", ".join(f"{k} {v}%" for k, v in r["categories"].items()))
    if args.docs:
        replace_section("profile", section(payload, f"bench/results/{out.name}"), Path(args.docs))
        print(f"# wrote {out} and {args.docs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
