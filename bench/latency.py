"""What every benchmark here reports of a run's latencies and errors."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol


class Measured(Protocol):
    """One process's share of a run: each call's latency, and errors by kind."""

    @property
    def latencies_ns(self) -> list[int]: ...

    @property
    def errors(self) -> Mapping[str, int]: ...


def percentile(ordered: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return 0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(shares: Iterable[Measured], seconds: float) -> dict[str, Any]:
    """Rotations, their rate over `seconds`, p50/p90/p99/max in ms, and errors by kind."""
    shares = list(shares)
    latencies = sorted(x for share in shares for x in share.latencies_ns)
    errors: Counter[str] = Counter()
    for share in shares:
        errors.update(share.errors)

    def ms(ns: int) -> float:
        return round(ns / 1e6, 3)

    return {
        "rotations": len(latencies),
        "rotations_per_second": round(len(latencies) / seconds, 1),
        "p50_ms": ms(percentile(latencies, 0.50)),
        "p90_ms": ms(percentile(latencies, 0.90)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "max_ms": ms(latencies[-1] if latencies else 0),
        "errors": dict(errors),
    }
