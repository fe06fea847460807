"""The bound of `bench.compare.bound`: the least floor ÷ keyturn any server doing a
rotation's unskippable steps can show, from the floor's line and the breakdown."""

from __future__ import annotations

import pytest
from bench.compare import bound
from bench.engine.breakdown import DECODE, ENCODE, SIGN, STORE


def test_the_bound_adds_the_unskippable_steps_to_the_floors_cpu_on_one_core() -> None:
    floor = [
        {
            "store": "sqlite",
            "concurrency": 64,
            "rotations_per_second": 8000.0,
            "server_cpu_percent": 100.0,
        },
    ]
    steps = {DECODE: 20.0, SIGN: 40.0, ENCODE: 15.0, STORE: 500.0}  # the store is the floor's
    breakdown = {"sqlite": {"steps": {k: {"median_us": v, "mean_us": v} for k, v in steps.items()}}}
    results = [
        {
            "system": "keyturn",
            "store": "sqlite",
            "workers": 1,
            "concurrency": 64,
            "rotations_per_second": 2500.0,
            "server_cpu_percent": 95.0,
        },
        {
            "system": "keyturn",
            "store": "sqlite",
            "workers": 2,
            "concurrency": 64,
            "rotations_per_second": 9999.0,
            "server_cpu_percent": 150.0,
        },
    ]
    [row] = bound.rows(floor, breakdown, results)
    assert row["floor_cpu_us"] == pytest.approx(125.0)  # one core, 8,000 a second
    assert row["unskippable_us"] == pytest.approx(75.0)
    assert row["best_per_second"] == pytest.approx(5000.0)
    assert row["least_ratio"] == pytest.approx(1.6)
    assert row["keyturn_cpu_us"] == pytest.approx(380.0)  # the one-worker line
    text = bound.section([row], "bench/run")
    assert "| SQLite | 64 | 8,000 | 125 | 75 | 5,000 | 1.60× | 380 | 3.20× |" in text
