"""The `compare` section of docs/benchmarks.md, from the comparison's JSON payload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.engine.report import machine_line, table

STORE = {"sqlite": "SQLite", "postgres": "PostgreSQL", "memory": "in memory"}

WHAT = """\
Each system is configured for one-time rotating refresh tokens with reuse protection
where it has it, seeded with {tokens:,} refresh tokens through its own models, and
driven on a loopback port by `bench.load`: C connections, each continuing its own
refresh-token chain with the token the last answer carried, for {seconds:.0f} s after
{warmup:.0f} s of warm-up, fresh chains for each line. Every answer is checked (200, an
access token, a refresh token that differs from the one presented); anything else is
counted under errors. One line per system, store, worker processes and concurrency.

{systems}

Django peers on SQLite use WAL, `BEGIN IMMEDIATE` and a 5 s busy timeout, as keyturn's
SQLite store does, but `synchronous=NORMAL`: their commits are not synced to the disk
before they answer, keyturn's are (`synchronous=FULL`, more work per rotation,
docs/decisions/sqlite-durability.md); on PostgreSQL one persistent connection per
worker. Every system runs on the same two cores as PostgreSQL and the load generator
(about 50 µs of CPU per request, see the ceiling below). `server CPU` is the system's
own share of the machine over the measured window (200 % = both cores; PostgreSQL's
CPU is not in it); with several processes, each one's share follows, busiest first.
"""


SYSTEMS = [
    (
        "keyturn",
        "decode and MAC-check the token; read the client, the session and its user and "
        "advance the session if the rules rotate it, committed (one statement on "
        "PostgreSQL; on SQLite a lock-free read, then one guarded `UPDATE` in the one "
        "synced transaction of its event-loop turn); sign an ES256 "
        "JWT access token; derive the successor (nothing is stored per token)",
        "`python -m keyturn serve --workers W` (uvicorn) on a database it has just created "
        "and migrated, every setting as shipped (default logging, grace window 10 s, reuse "
        "ends the session) but the login and token rate limits, raised to 10⁸/min (all "
        "requests come from 127.0.0.1; the limiter still counts every one); sessions "
        "opened by logins at `/auth/login` (`bench.load.logins`), no database "
        "maintenance run by hand",
    ),
    (
        "django-oauth-toolkit",
        "look the token up by checksum, lock it, revoke it, insert a new access token and "
        "refresh token (opaque, random), in one transaction",
        "`ROTATE_REFRESH_TOKEN=True`, `REFRESH_TOKEN_REUSE_PROTECTION=True` (a rotated-out "
        "token presented again revokes its family); public client; gunicorn sync workers "
        "(`Connection: close` on every answer)",
    ),
    (
        "simplejwt",
        "verify the HS256 refresh JWT, check the blacklist, blacklist it (outstanding and "
        "blacklisted rows), sign a new refresh JWT and access JWT, record the new one as "
        "outstanding",
        "`ROTATE_REFRESH_TOKENS=True`, `BLACKLIST_AFTER_ROTATION=True` (a blacklisted token "
        "is refused; there is no family revocation); gunicorn sync workers; "
        "`POST /api/token/refresh/` with JSON",
    ),
    (
        "oidc-provider",
        "find the token and its grant, mark it consumed, save a new refresh token and an "
        "opaque access token, sign an ES256 ID token (scope `openid offline_access`)",
        "`rotateRefreshToken: true` (a consumed token presented again revokes the grant); "
        "store `memory`: its MemoryAdapter on an unbounded Map (one process); store "
        "`postgres`: a jsonb-table adapter in `bench/peers/oidc/server.mjs`, W processes "
        "with node:cluster",
    ),
]


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "0"


def _server_cpu(row: dict[str, Any]) -> str:
    total = f"{row['server_cpu_percent']:.0f}"
    parts = row.get("server_process_cpu_percents", [])
    return f"{total} ({' + '.join(f'{p:.0f}' for p in parts)})" if len(parts) > 1 else total


def results_table(rows: list[dict[str, Any]]) -> list[str]:
    body = [
        [
            r["system"],
            STORE.get(r["store"], r["store"]),
            str(r["workers"]),
            str(r["concurrency"]),
            f"{r['rotations_per_second']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['max_ms']:.1f}",
            _errors(r["errors"]),
            _server_cpu(r),
            f"{r.get('server_peak_rss_mb', 0):.0f}",
            f"{r['generator_cpu_percent']:.0f}",
            f"{r['busy_before']:.0f}",
        ]
        for r in rows
    ]
    return table(
        [
            "system",
            "store",
            "workers",
            "concurrency",
            "rotations/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "errors",
            "server CPU % (per process)",
            "peak RSS MiB (largest process)",
            "generator CPU %",
            "busy before %",
        ],
        "lllrrrrrrlrrrr",
        body,
    )


def ceiling_table(rows: list[dict[str, Any]]) -> list[str]:
    body = []
    for r in rows:
        if r["client"] == "bench.load":
            per = 1e6 * r["generator_cpu_percent"] / 100 / max(r["rotations_per_second"], 1)
            body.append(
                [
                    r["server"],
                    f"bench.load × {r['processes']}",
                    str(r["concurrency"]),
                    f"{r['rotations_per_second']:,.0f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{r['generator_cpu_percent']:.0f}",
                    f"{per:.0f}",
                    f"{r['server_cpu_percent']:.0f}",
                    _errors(r["errors"]),
                ]
            )
        else:
            body.append(
                [
                    r["server"],
                    r["client"],
                    str(r["concurrency"]),
                    f"{r['rotations_per_second']:,.0f}",
                    *["–"] * 5,
                    "–",
                ]
            )
    return table(
        [
            "trivial endpoint",
            "client",
            "concurrency",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "generator CPU %",
            "generator µs CPU per request",
            "server CPU %",
            "errors",
        ],
        "llrrrrrrrl",
        body,
    )


def pgbench_table(rows: list[dict[str, Any]]) -> list[str]:
    return table(
        ["clients", "commits/s (tps)", "latency average ms", "busy before %"],
        "rrrr",
        [
            [
                str(r["clients"]),
                f"{r['tps']:,.0f}",
                f"{r['latency_ms']:.2f}",
                f"{r['busy_before']:.0f}",
            ]
            for r in rows
        ],
    )


def one_worker_line(
    results: list[dict[str, Any]], store: str, concurrency: int
) -> dict[str, Any] | None:
    """keyturn's line with one worker on `store` at `concurrency`, if it ran."""
    for k in results:
        if (k["system"], k["store"], k["workers"], k["concurrency"]) == (
            "keyturn",
            store,
            1,
            concurrency,
        ):
            return k
    return None


def floor_part(rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[str]:
    body = []
    for r in rows:
        mine = one_worker_line(results, r["store"], r["concurrency"])
        keyturn = mine["rotations_per_second"] if mine else 0.0
        body.append(
            [
                STORE[r["store"]],
                str(r["concurrency"]),
                f"{r['rotations_per_second']:,.0f}",
                f"{r['p99_ms']:.2f}",
                f"{r['server_cpu_percent']:.0f}",
                f"{r['server_cpu_percent'] * 1e4 / r['rotations_per_second']:,.0f}",
                f"{keyturn:,.0f}" if keyturn else "–",
                f"{r['rotations_per_second'] / keyturn:.2f}×" if keyturn else "–",
                f"{r['busy_before']:.0f}",
            ]
        )
    return [
        "### The floor of a rotation on keyturn's stack",
        "",
        "What the stack keyturn is built on reaches before keyturn does anything of its "
        "own: `python -m bench.load.trivial --kind floor-sqlite|floor-postgres`, one "
        "uvicorn worker (with keyturn's one-write protocol) and a Starlette route that "
        "reads the request body and does a rotation's database work as keyturn does it "
        "(SQLite in WAL mode, durable as keyturn's: `synchronous=FULL`, the WAL written "
        "ahead, a primary-key read then a compare-and-swap `UPDATE`, the rotations of "
        "one event-loop turn in one transaction; PostgreSQL through an asyncpg pool: one statement "
        "that reads the row and advances it only if it is still at the generation read), "
        "then answers a fixed JSON body: no form parsing, token decoding, MAC, rules, "
        "signing, audit, logs or metrics. "
        "keyturn's figure is its own line above at the same store, one worker and "
        "concurrency; the ratio is how far keyturn is from that floor.",
        "",
        *table(
            [
                "store",
                "concurrency",
                "floor rotations/s",
                "floor p99 ms",
                "floor server CPU %",
                "floor CPU µs per rotation",
                "keyturn 1w rotations/s",
                "floor ÷ keyturn",
                "busy before %",
            ],
            "lrrrrrrrr",
            body,
        ),
    ]


def scale_part(rows: list[dict[str, Any]]) -> list[str]:
    concurrency = rows[0]["concurrency"]
    body = []
    for r in rows:
        base = next(b for b in rows if b["store"] == r["store"])
        change = 100 * (r["rotations_per_second"] / base["rotations_per_second"] - 1)
        body.append(
            [
                STORE[r["store"]],
                f"{r['sessions']:,}",
                f"{r['rotations_per_second']:,.0f}",
                "–" if r is base else f"{change:+.0f} %",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                _errors(r["errors"]),
                f"{r['server_peak_rss_mb']:.0f}",
                f"{r['busy_before']:.0f}",
            ]
        )
    return [
        "### A hundred thousand or a million live sessions",
        "",
        f"keyturn, one worker, {concurrency} connections, against a database preloaded "
        "with each number of live sessions (in bulk by `bench.engine.preload`: logins "
        "would take hours; nothing run after it, not even `ANALYZE`); the chains rotated "
        "are drawn at random from the whole table, so every read and every "
        "compare-and-swap goes through the full primary-key index.",
        "",
        *table(
            [
                "store",
                "live sessions",
                "rotations/s",
                "against the first",
                "p50 ms",
                "p99 ms",
                "errors",
                "peak RSS MiB",
                "busy before %",
            ],
            "lrrrrrlrr",
            body,
        ),
    ]


def _best(rows: list[dict[str, Any]], system: str, store: str) -> str:
    mine = [r for r in rows if r["system"] == system and r["store"] == store]
    if not mine:
        return "–"
    top = max(mine, key=lambda r: r["rotations_per_second"])
    return f"{top['rotations_per_second']:,.0f}/s ({top['workers']}w, c={top['concurrency']})"


def section(payload: dict[str, Any], json_path: Path | str) -> str:
    facts = payload["machine"]
    settings = payload["settings"]
    rows = payload["results"]
    limits = payload.get("limits", {})
    noisy = [r for r in rows if r["busy_before"] > 15]
    noise = (
        f"{len(noisy)} of {len(rows)} lines started while other jobs kept the machine over "
        "15 % busy (`busy before`); compare those with care."
        if noisy
        else "Every line started on an idle machine (under 15 % CPU)."
    )
    out = [
        "## Side by side: keyturn and its peers over HTTP",
        "",
        WHAT.format(
            systems="\n".join(
                table(
                    ["system", "what one rotation does", "configuration"],
                    "lll",
                    [list(x) for x in SYSTEMS],
                )
            ),
            **settings,
        ).rstrip(),
        "",
        machine_line(facts),
        "",
        "Versions: "
        + "; ".join(f"{k}: {v}" for k, v in payload["versions"].items())
        + f". Started {payload['started']} UTC. {noise}",
        "",
        "Reproduce from the repository root (installs the pinned peers under "
        "`bench/peers/` if missing; PostgreSQL at `postgresql://root@127.0.0.1:5432/test`, "
        "trust authentication):",
        "",
        "```sh",
        payload["command"],
        "```",
        "",
        f"Figures: `{json_path}`. Best throughput per system and store: "
        + "; ".join(
            f"{system} {STORE[store]} {_best(rows, system, store)}"
            for system, store in dict.fromkeys((r["system"], r["store"]) for r in rows)
        )
        + ".",
        "",
        "![Rotations per second against concurrency](img/compare-throughput.png)",
        "",
        "![Latency percentiles per concurrency](img/compare-latency.png)",
        "",
        *results_table(rows),
    ]
    if payload.get("failures"):
        out += ["", "Failed to run: " + ", ".join(payload["failures"]) + "."]
    if "pgbench" in limits:
        out += [
            "",
            "### PostgreSQL's own commit rate here",
            "",
            "`pgbench` with a custom script of one single-row `UPDATE` per transaction "
            "(autocommit, prepared), each client on a random row of 10,000, two pgbench "
            f"threads, 10 s: `{limits['pgbench'][0]['command']}`. Every rotation of keyturn "
            "on PostgreSQL commits one such compare-and-swap, so this is the rate no "
            "rotation can beat on this machine, before any HTTP, read or signing. Settings: "
            + ", ".join(f"`{k} = {v}`" for k, v in payload.get("postgresql_settings", {}).items())
            + ".",
            "",
            *pgbench_table(limits["pgbench"]),
        ]
    if "floor" in limits:
        out += ["", *floor_part(limits["floor"], rows)]
    if "scale" in limits:
        out += ["", *scale_part(limits["scale"])]
    if "ceiling" in limits:
        out += [
            "",
            "### The load generator's ceiling",
            "",
            "The same generator against token endpoints that do no work "
            "(`python -m bench.load.trivial`: `raw`, an asyncio protocol on uvloop; "
            "`starlette`, a Starlette route under uvicorn, keyturn's HTTP stack), with one "
            "and two generator processes, and `wrk` (one thread, a fixed request) against "
            "the raw one. The generator needs about the CPU per request shown; at the "
            "rates the real systems reach (a few thousand per second at most) one "
            "generator process takes a small share of one core, so it is not what limits "
            "them, but it does compete with the server for the two cores, as "
            "`generator CPU %` in the main table shows.",
            "",
            *ceiling_table(limits["ceiling"]),
        ]
    return "\n".join(out)
