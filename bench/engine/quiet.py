"""Waiting for the machine to be idle before measuring.

On a shared machine, another job's test run would be measured as keyturn's slowness.
Before each line the benchmark samples the whole machine's CPU use (from /proc/stat)
and waits, up to a bound, until it is nearly idle; the last sample is recorded with
the figures so a noisy line can be recognised.
"""

from __future__ import annotations

import time
from pathlib import Path

STAT = Path("/proc/stat")


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies over all cores, or None where /proc/stat is missing."""
    try:
        fields = STAT.read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_percent(sample: float = 1.0) -> float:
    """The share of all cores busy over the next `sample` seconds (0 if unknown)."""
    before = _cpu_times()
    time.sleep(sample)
    after = _cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return 0.0
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def wait_for_quiet(threshold: float = 15.0, patience: float = 180.0) -> float:
    """Sample until the machine is under `threshold` % busy, or `patience` seconds
    have passed; returns the last sample."""
    deadline = time.monotonic() + patience
    busy = busy_percent()
    while busy > threshold and time.monotonic() < deadline:
        print(f"# waiting: the machine is {busy:.0f} % busy", flush=True)
        time.sleep(4.0)
        busy = busy_percent()
    return busy
