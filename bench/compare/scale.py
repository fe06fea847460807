"""Does keyturn slow down as the sessions table grows? The same HTTP load against a
database preloaded with 100,000 and with 1,000,000 live sessions: the chains rotated are
drawn at random from the whole table, so every lookup goes through the big index."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.compare.procs import Window
from bench.compare.systems import KEYTURN, Spec, keyturn
from bench.engine.quiet import wait_for_quiet
from bench.load.drive import line, run_load


def scale(
    stores: list[str],
    sizes: list[int],
    concurrency: int,
    seconds: float,
    warmup: float,
    quiet: float,
    folder: Path,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for store in stores:
        for size in sizes:
            spec = Spec(KEYTURN, store, 1)
            with keyturn(spec, 2 * concurrency, folder, sessions=size) as running:
                busy = wait_for_quiet(patience=quiet)
                with Window(running.pid, warmup, seconds) as window:
                    result = run_load(
                        running.endpoint, running.tokens, concurrency, seconds, warmup, 1
                    )
            print(line(result, f"keyturn · {store} · {size:,} sessions "), flush=True)
            rows.append(
                {
                    "store": store,
                    "sessions": size,
                    **asdict(result),
                    "server_cpu_percent": window.server_percent,
                    "server_peak_rss_mb": window.peak_rss_mb,
                    "busy_before": round(busy, 1),
                }
            )
    return rows
