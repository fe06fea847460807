"""`python -m bench.continuity`: generate the scenario, play it against every policy, report.

The default run (SQLite, 7 days, 500 devices) takes about 4-7 minutes on 2 vCPUs,
nearly all of it in keyturn's engine; `--quick` (1 day, 40 devices) a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.continuity import keyturn_policies, peer_models, report
from bench.continuity.keyturn_server import keyturn_server
from bench.continuity.population import Scenario, default_mix, generate
from bench.continuity.simulation import play
from keyturn.core.policy import RotationSettings

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = "postgresql://root@127.0.0.1:5432/test"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.continuity", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 day, 40 devices, 2 thefts per cell")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--days", type=float, help="simulated days (default 7; quick 1)")
    parser.add_argument("--devices", type=int, help="legitimate devices (default 500; quick 40)")
    parser.add_argument(
        "--thefts", type=int, help="thefts per strategy and key (default 20; quick 2)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keyturn",
        action="append",
        metavar="PRESET",
        help="run only this keyturn preset (repeat for more; default: all)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("KEYTURN_BENCH_POSTGRES_URL", POSTGRES_URL),
        help="PostgreSQL for --store postgres (a fresh schema is made and dropped)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes"
    )
    parser.add_argument("--plot", type=Path, help="default docs/img/rotation-policies.png")
    parser.add_argument("--doc", type=Path, help="default docs/rotation-policies.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.days = args.days or 1.0
        args.devices = args.devices or 40
        args.thefts = args.thefts or 2
        # A quick run never rewrites the committed documents unless told to.
        args.plot = args.plot or args.out / "rotation-policies.png"
        args.doc = args.doc or args.out / "rotation-policies.md"
    args.days = args.days or 7.0
    args.devices = args.devices or 500
    args.thefts = args.thefts or 20
    args.plot = args.plot or ROOT / "docs" / "img" / "rotation-policies.png"
    args.doc = args.doc or ROOT / "docs" / "rotation-policies.md"
    return args


def _commit() -> str:
    """HEAD, marked when the engine imported is this checkout's `src` with changes in it."""
    import keyturn

    here = Path(keyturn.__file__).resolve().is_relative_to(ROOT / "src")
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+uncommitted src changes" if here and dirty else "")


async def play_all(scenario: Scenario, args: argparse.Namespace) -> list[report.PolicyRun]:
    runs: list[report.PolicyRun] = []
    with tempfile.TemporaryDirectory(prefix="keyturn-continuity-") as workdir:
        chosen = [keyturn_policies.preset(name) for name in args.keyturn or ()]
        for preset in chosen or keyturn_policies.PRESETS:
            async with keyturn_server(
                preset,
                scenario.devices,
                store=args.store,
                workdir=Path(workdir),
                postgres_url=args.postgres_url,
            ) as server:
                result = await play(scenario, server)
            runs.append(
                report.PolicyRun(
                    name=preset.name,
                    family="keyturn",
                    systems="keyturn",
                    summary=preset.summary,
                    sources=(),
                    dpop="dpop" if preset.dpop else report.NOT_MODELLED,
                    result=result,
                )
            )
            _progress(preset.name, result.refreshes, result.wall_seconds)
    for peer in peer_models.PEERS:
        result = await play(scenario, peer.server())
        runs.append(
            report.PolicyRun(
                name=peer.name,
                family="model",
                systems=peer.systems,
                summary=peer.summary,
                sources=peer.sources,
                dpop="no key binding",
                result=result,
            )
        )
        _progress(peer.name, result.refreshes, result.wall_seconds)
    return runs


def _progress(name: str, refreshes: int, seconds: float) -> None:
    print(f"  {name}: {refreshes:,} refreshes in {seconds:.1f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    began = time.perf_counter()
    mix = default_mix(args.devices, args.thefts)
    scenario = generate(args.seed, args.days, mix)
    legit = scenario.legit_devices
    print(
        f"continuity: {legit:,} legitimate devices x {args.days:g} days = "
        f"{legit * args.days:,.0f} device-days, {len(scenario.thieves)} thefts, "
        f"{len(scenario.events):,} intentions; keyturn on {args.store}",
        file=sys.stderr,
        flush=True,
    )
    runs = asyncio.run(play_all(scenario, args))
    summaries = [report.summarise(run, args.days) for run in runs]
    date = datetime.now(UTC).date().isoformat()
    meta: dict[str, Any] = {
        "date": date,
        "seed": args.seed,
        "days": args.days,
        "devices_requested": args.devices,
        "legit_devices": legit,
        "legit_device_days": legit * args.days,
        "thefts": len(scenario.thieves),
        "mix": {k.value: v for k, v in mix.devices.items()},
        "thefts_per_strategy_and_key": args.thefts,
        "store": args.store,
        "store_label": "a SQLite file" if args.store == "sqlite" else "PostgreSQL (fresh schema)",
        "commit": _commit(),
        "quick": args.quick,
        "wall_seconds": round(time.perf_counter() - began, 1),
        "keyturn_presets": [
            {
                "name": p.name,
                "summary": p.summary,
                "settings": dict(p.settings),
                "clients": {
                    k.value: {
                        "client_id": c.client_id,
                        "options": {n: _shown(v) for n, v in c.options.items()},
                    }
                    for k, c in p.clients.items()
                },
                "dpop": p.dpop,
            }
            for p in keyturn_policies.PRESETS
        ],
    }
    print(report.text_table(*report.main_rows(summaries)))
    print()
    print(report.text_table(*report.strategy_rows(summaries)))
    print(
        f"\n{legit * args.days:,.0f} legitimate device-days; {meta['wall_seconds']:.0f} s in all",
        file=sys.stderr,
    )

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"continuity-{date}.json"
    json_path.write_text(json.dumps({"meta": meta, "policies": summaries}, indent=2) + "\n")
    subtitle = (
        f"{legit * args.days:,.0f} device-days, {len(scenario.thieves)} thefts, seed {args.seed}; "
        f"keyturn on {args.store}, peers modelled from their docs ({date})"
    )
    report.plot(summaries, args.plot, subtitle)
    try:
        image = os.path.relpath(args.plot, args.doc.parent)
    except ValueError:
        image = str(args.plot)
    report.write_doc(args.doc, report.doc_section(summaries, meta, image, json_path.name))
    print(f"wrote {json_path}, {args.plot}, {args.doc}", file=sys.stderr)
    return 0


def _shown(value: Any) -> Any:
    """An `add_client` argument as JSON: a rotation policy as its `name=value` words."""
    return value.describe() if isinstance(value, RotationSettings) else value
