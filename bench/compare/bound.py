"""How close to the floor a rotation can come: the floor's own CPU per rotation, plus
what no rotation that keeps keyturn's guarantees can skip, on one core.

The floor (`bench.load.trivial`, `bench.compare.limits.floor`) does a rotation's
database work and answers a fixed body. A real rotation must in addition at least
check the presented refresh token's MAC (decode), sign a new access token and seal
the next refresh token (encode): the three steps `bench.engine.breakdown` times inside
`Refresher.refresh_for` (medians). One worker is one core at most, so a rotation that
costs the floor's CPU plus those steps reaches at most `1 / (floor CPU + steps)`
per second, and the least "floor ÷ keyturn" any such server can show is the floor's
rate over that. Everything else keyturn does (form, client authentication, rules,
response, log, metrics, the HTTP layer) comes on top.
"""

from __future__ import annotations

from typing import Any

from bench.compare.report import STORE, one_worker_line
from bench.engine.breakdown import DECODE, ENCODE, SIGN
from bench.engine.report import table

UNSKIPPABLE = (DECODE, SIGN, ENCODE)


def rows(
    floor: list[dict[str, Any]], breakdown: dict[str, dict[str, Any]], results: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = []
    for f in floor:
        steps = breakdown[f["store"]]["steps"]
        floor_us = f["server_cpu_percent"] * 1e4 / f["rotations_per_second"]
        extra_us = sum(steps[s]["median_us"] for s in UNSKIPPABLE)
        best = 1e6 / (floor_us + extra_us)
        keyturn = one_worker_line(results, f["store"], f["concurrency"])
        out.append(
            {
                "store": f["store"],
                "concurrency": f["concurrency"],
                "floor_per_second": f["rotations_per_second"],
                "floor_cpu_us": floor_us,
                "unskippable_us": extra_us,
                "best_per_second": best,
                "least_ratio": f["rotations_per_second"] / best,
                "keyturn_per_second": keyturn["rotations_per_second"] if keyturn else None,
                "keyturn_cpu_us": keyturn["server_cpu_percent"]
                * 1e4
                / keyturn["rotations_per_second"]
                if keyturn
                else None,
            }
        )
    return out


def section(found: list[dict[str, Any]], command: str) -> str:
    body = [
        [
            STORE[r["store"]],
            str(r["concurrency"]),
            f"{r['floor_per_second']:,.0f}",
            f"{r['floor_cpu_us']:,.0f}",
            f"{r['unskippable_us']:,.0f}",
            f"{r['best_per_second']:,.0f}",
            f"{r['least_ratio']:.2f}×",
            "–" if r["keyturn_cpu_us"] is None else f"{r['keyturn_cpu_us']:,.0f}",
            "–"
            if r["keyturn_per_second"] is None
            else f"{r['floor_per_second'] / r['keyturn_per_second']:.2f}×",
        ]
        for r in found
    ]
    return "\n".join(
        [
            "## How close to the floor a rotation can come",
            "",
            "The floor's CPU per rotation (its server CPU over its rate, the floor table "
            "above) plus what no rotation keeping keyturn's guarantees can skip: the "
            "refresh token's MAC checked, the access token signed (ES256), the next "
            "refresh token sealed (medians of `bench.engine.breakdown` in the same run). "
            "One worker is one core at most, so such a rotation reaches at most "
            "1 / (floor CPU + those steps) per second; *least floor ÷ any* is the floor's "
            "rate over that, the nearest any server doing those steps can come to the "
            "floor. keyturn's CPU per rotation is its one-worker line's server CPU over "
            f"its rate. `{command}`",
            "",
            *table(
                [
                    "store",
                    "concurrency",
                    "floor rotations/s",
                    "floor CPU µs",
                    "unskippable steps µs",
                    "at most rotations/s",
                    "least floor ÷ any",
                    "keyturn CPU µs",
                    "floor ÷ keyturn",
                ],
                "lrrrrrrrr",
                body,
            ),
        ]
    )
