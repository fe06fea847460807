"""`python -m bench.soak`: serve keyturn on a fresh PostgreSQL schema, drive the steady
load for `--minutes`, run `keyturn purge` every `--purge-every` minutes, sample every
minute, write the JSON and print the table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.soak.load import EXPECTED, Driver, Load, Minute, Recorder
from bench.soak.server import (
    KEYTURN,
    Deployment,
    cpu_seconds,
    create_schema,
    drop_schema,
    free_port,
    log_levels,
    machine_busy,
    rss_mib,
    serving,
    workers_of,
)

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = "postgresql://root@127.0.0.1:5432/test"
# The purge job's own retention of ended sessions (the server keeps its default): with
# the default 7 days a 30-minute run would give purge nothing to delete.
PURGE_RETENTION = "60"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--devices", type=int, default=600)
    parser.add_argument(
        "--period", type=float, default=2.0, help="mean seconds between a device's rotations"
    )
    parser.add_argument(
        "--session-rotations", type=int, default=100, help="mean rotations before a logout"
    )
    parser.add_argument("--introspect-share", type=float, default=0.05)
    parser.add_argument("--addresses", type=int, default=100, help="loopback source addresses")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--resource-servers", type=int, default=4)
    parser.add_argument("--ramp", type=float, default=60.0, help="seconds to start all devices")
    parser.add_argument("--purge-every", type=float, default=5.0, help="minutes")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("KEYTURN_BENCH_POSTGRES_URL", POSTGRES_URL)
    )
    parser.add_argument("--json", type=Path, help="default bench/results/soak-<date>.json")
    parser.add_argument("--keep-schema", action="store_true")
    return parser.parse_args(argv)


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 2)


def seed(deployment: Deployment, args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str]]:
    """Users and clients, registered with the `keyturn` command."""
    deployment.keyturn(
        "clients", "add", "native", "--type", "public", "--kind", "native",
        "--grant", "password", "--grant", "refresh_token", "--scope", "read write",
        "--delivery", "body",
    )  # fmt: skip
    resource_servers = {}
    for n in range(args.resource_servers):
        name = f"notes-api-{n + 1}"
        out = deployment.keyturn(
            "clients", "add", name, "--type", "confidential", "--introspect",
            "--grant", "client_credentials", "--json",
        )  # fmt: skip
        resource_servers[name] = json.loads(out)["client_secret"]
    users = {}
    for n in range(args.users):
        name = f"soak-user-{n + 1}"
        password = secrets.token_urlsafe(18)
        deployment.keyturn("users", "add", name, "--password-stdin", stdin=password + "\n")
        users[name] = password
    return users, resource_servers


class Sampler:
    """Each worker's RSS and CPU, the machine's CPU and the generator's, per minute."""

    def __init__(self, supervisor: int) -> None:
        self.supervisor = supervisor
        self.last_cpu: dict[int, float] = {}
        for pid in workers_of(supervisor):
            self.last_cpu[pid] = cpu_seconds(pid) or 0.0
        self.last_machine = machine_busy()
        self.last_self = self._own_cpu()
        self.last_at = time.monotonic()

    @staticmethod
    def _own_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        wall = now - self.last_at
        workers: dict[str, dict[str, float | None]] = {}
        for pid in workers_of(self.supervisor):
            cpu = cpu_seconds(pid)
            before = self.last_cpu.get(pid)
            workers[str(pid)] = {
                "rss_mib": rss_mib(pid),
                "cpu_pct": None
                if cpu is None or before is None
                else round(100 * (cpu - before) / wall, 1),
            }
            if cpu is not None:
                self.last_cpu[pid] = cpu
        busy, total = machine_busy()
        own = self._own_cpu()
        sample = {
            "supervisor_rss_mib": rss_mib(self.supervisor),
            "workers": workers,
            "machine_busy_pct": round(
                100 * (busy - self.last_machine[0]) / max(total - self.last_machine[1], 1e-9), 1
            ),
            "generator_cpu_pct": round(100 * (own - self.last_self) / wall, 1),
        }
        self.last_machine, self.last_self, self.last_at = (busy, total), own, now
        return sample


def summarise_minute(index: int, minute: Minute, sample: dict[str, Any]) -> dict[str, Any]:
    return {
        "minute": index + 1,
        "requests": sum(minute.by_kind.values()),
        "per_second": round(sum(minute.by_kind.values()) / 60, 1),
        "by_kind": dict(sorted(minute.by_kind.items())),
        "by_status": {str(k): v for k, v in sorted(minute.by_status.items())},
        "errors": sum(minute.errors.values()),
        "error_kinds": dict(minute.errors),
        "p50_ms": _percentile(minute.latencies, 0.50),
        "p99_ms": _percentile(minute.latencies, 0.99),
        "by_kind_ms": {
            kind: {"p50": _percentile(values, 0.50), "p99": _percentile(values, 0.99)}
            for kind, values in sorted(minute.by_kind_latencies.items())
        },
        **sample,
    }


async def purge_job(
    deployment: Deployment, every: float, driver: Driver, started: float
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    while await driver.pause(every):
        at = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *KEYTURN,
            "purge",
            "--json",
            env=deployment.env(KEYTURN_PURGE_RETENTION=PURGE_RETENTION),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        run: dict[str, Any] = {
            "at_minute": round((at - started) / 60, 2),
            "seconds": round(time.monotonic() - at, 2),
            "exit": proc.returncode,
        }
        try:
            run["deleted"] = json.loads(out)["deleted"]
        except (ValueError, KeyError):
            run["output"] = (out + err).decode(errors="replace")[-500:]
        runs.append(run)
    return runs


async def soak(args: argparse.Namespace, deployment: Deployment, log: Path) -> dict[str, Any]:
    port = free_port()
    with serving(deployment, port, args.workers, log) as server:
        users, resource_servers = await asyncio.to_thread(seed, deployment, args)
        load = Load(
            host="127.0.0.1",
            port=port,
            devices=args.devices,
            period=args.period,
            session_rotations=args.session_rotations,
            introspect_share=args.introspect_share,
            addresses=args.addresses,
            connections_per_address=2,
            users=users,
            resource_servers=resource_servers,
            ramp=args.ramp,
        )
        sampler = Sampler(server.pid)
        recorder = Recorder()
        driver = Driver(load, recorder)
        started_at = datetime.now(UTC)
        devices = asyncio.create_task(driver.run())
        purges = asyncio.create_task(
            purge_job(deployment, args.purge_every * 60, driver, recorder.start)
        )
        minutes: list[dict[str, Any]] = []
        total = args.minutes
        print(_header(), flush=True)
        for index in range(total):
            await asyncio.sleep(max(0.0, recorder.start + 60 * (index + 1) - time.monotonic()))
            sample = sampler.sample()
            row = summarise_minute(index, recorder.minutes.pop(index, Minute()), sample)
            minutes.append(row)
            print(_row(row), flush=True)
        driver.stopping.set()
        await asyncio.wait_for(devices, 60)
        purge_runs = await purges
        ended_at = datetime.now(UTC)
        final = sampler.sample()
        tail = recorder.minutes.get(total, Minute())  # the logouts of the stop
        workers_alive = workers_of(server.pid)
    lines, levels, notable = log_levels(log)
    return {
        "started_at": started_at.isoformat(timespec="seconds"),
        "ended_at": ended_at.isoformat(timespec="seconds"),
        "load": {
            "devices": load.devices,
            "addresses": load.addresses,
            "connections": load.addresses * load.connections_per_address,
            "mean_rotation_period_s": load.period,
            "mean_rotations_per_session": load.session_rotations,
            "introspect_share": load.introspect_share,
            "users": len(users),
            "resource_servers": len(resource_servers),
            "ramp_s": load.ramp,
            "planned_per_second": round(load.rate, 1),
        },
        "minutes": minutes,
        "after_stop": {
            "requests": sum(tail.by_kind.values()),
            "errors": sum(tail.errors.values()),
            "error_kinds": dict(tail.errors),
            **final,
        },
        "workers_at_end": workers_alive,
        "purges": purge_runs,
        "error_examples": recorder.examples,
        "server_log": {"lines": lines, "by_level": levels, "above_info": notable},
    }


def summary(result: dict[str, Any]) -> dict[str, Any]:
    minutes = result["minutes"]
    steady = minutes[2:] or minutes  # the first two minutes ramp the devices up
    by_status: dict[str, int] = {}
    for row in minutes:
        for status, n in row["by_status"].items():
            by_status[status] = by_status.get(status, 0) + n
    requests = sum(row["requests"] for row in minutes)
    rss: dict[str, dict[str, float]] = {}
    for pid in minutes[-1]["workers"] if minutes else {}:
        series = [row["workers"][pid]["rss_mib"] for row in minutes if pid in row["workers"]]
        rss[pid] = {
            "first": series[0],
            "after_ramp": series[min(2, len(series) - 1)],
            "last": series[-1],
            "max": max(series),
        }
    p99 = [row["p99_ms"] for row in steady if row["p99_ms"] is not None]
    rotation_p99 = [
        row["by_kind_ms"]["rotation"]["p99"] for row in steady if "rotation" in row["by_kind_ms"]
    ]
    cpu = [sum(w["cpu_pct"] or 0 for w in row["workers"].values()) for row in steady]
    return {
        "requests": requests,
        "per_second": round(requests / (60 * len(minutes)), 1) if minutes else 0,
        "by_status": by_status,
        "errors": sum(row["errors"] for row in minutes) + result["after_stop"]["errors"],
        "rss_mib_per_worker": rss,
        "p99_ms_steady": {
            "min": min(p99, default=None),
            "median": statistics.median(p99) if p99 else None,
            "max": max(p99, default=None),
        },
        "rotation_p99_ms_steady": {
            "min": min(rotation_p99, default=None),
            "median": statistics.median(rotation_p99) if rotation_p99 else None,
            "max": max(rotation_p99, default=None),
        },
        "p50_ms_steady_median": statistics.median(
            [row["p50_ms"] for row in steady if row["p50_ms"] is not None] or [0]
        ),
        "workers_cpu_pct_steady_mean": round(statistics.mean(cpu), 1) if cpu else None,
        "generator_cpu_pct_steady_mean": round(
            statistics.mean(row["generator_cpu_pct"] for row in steady), 1
        )
        if steady
        else None,
        "purges": len(result["purges"]),
        "purge_failures": sum(1 for run in result["purges"] if run["exit"] != 0),
        "purged_rows": sum(run.get("deleted", 0) for run in result["purges"]),
    }


def _header() -> str:
    return (
        f"{'min':>3} {'req/s':>7} {'err':>4} {'p50 ms':>7} {'p99 ms':>7} {'rot p99':>7} "
        f"{'RSS MiB per worker':>20} {'workers CPU%':>12} {'machine%':>8}"
    )


def _row(row: dict[str, Any]) -> str:
    rss = " ".join(f"{w['rss_mib']:.0f}" for w in row["workers"].values())
    cpu = sum(w["cpu_pct"] or 0 for w in row["workers"].values())
    rotation = row["by_kind_ms"].get("rotation", {}).get("p99") or 0
    return (
        f"{row['minute']:>3} {row['per_second']:>7} {row['errors']:>4} "
        f"{row['p50_ms'] or 0:>7} {row['p99_ms'] or 0:>7} {rotation:>7} {rss:>20} {cpu:>12.1f} "
        f"{row['machine_busy_pct']:>8}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    deployment = Deployment(
        args.postgres_url,
        asyncio.run(create_schema(args.postgres_url)),
        secrets.token_urlsafe(32),
    )
    wall = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="keyturn-soak-") as tmp:
            result = asyncio.run(soak(args, deployment, Path(tmp) / "serve.log"))
    finally:
        if not args.keep_schema:
            asyncio.run(drop_schema(args.postgres_url, deployment.schema))
    result = {
        "meta": {
            "date": datetime.now(UTC).date().isoformat(),
            "commit": _commit(),
            "command": "python -m bench.soak " + " ".join(sys.argv[1:] if argv is None else argv),
            "cores": os.cpu_count(),
            "server": {
                "command": f"keyturn serve --workers {args.workers}",
                "store": "PostgreSQL, a fresh schema migrated by keyturn serve",
                "settings": "defaults but KEYTURN_DATABASE_URL, KEYTURN_DB_SCHEMA, "
                "KEYTURN_SECRET_KEY; no Redis; no limit raised",
                "limits": {
                    "KEYTURN_LOGIN_REQUESTS_PER_MINUTE": 60,
                    "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": 1200,
                    "KEYTURN_TOKEN_REQUESTS_PER_MINUTE": 1200,
                },
                "expected": EXPECTED,
            },
            "purge": {
                "command": "keyturn purge --json",
                "every_minutes": args.purge_every,
                "settings": f"KEYTURN_PURGE_RETENTION={PURGE_RETENTION} (this job only)",
            },
            "wall_seconds": round(time.monotonic() - wall, 1),
        },
        **result,
    }
    result["summary"] = summary(result)
    out = args.json or ROOT / "bench" / "results" / f"soak-{result['meta']['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    print(
        f"\n{s['requests']} requests ({s['per_second']}/s), {s['errors']} errors, "
        f"statuses {s['by_status']}; p99 steady {s['p99_ms_steady']} ms, rotations "
        f"{s['rotation_p99_ms_steady']} ms; "
        f"RSS per worker {s['rss_mib_per_worker']}; purges {s['purges']} "
        f"({s['purge_failures']} failed, {s['purged_rows']} rows); "
        f"workers CPU {s['workers_cpu_pct_steady_mean']} %, generator "
        f"{s['generator_cpu_pct_steady_mean']} %\nwritten to {out}"
    )
    return 0 if s["errors"] == 0 else 1
