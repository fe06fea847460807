"""Profiling the rotation hot path: 16 callers in one process, under a profiler.

    .venv/bin/python -m bench.engine.hotpath --store sqlite        # cProfile, main thread
    py-spy record --rate 250 --format raw --output /tmp/hot.txt --threads -- \\
        .venv/bin/python -m bench.engine.hotpath --store postgres --profiler none
    .venv/bin/python -m bench.engine.hotpath --collapsed /tmp/hot.txt

The first prints the functions with the most own time and keyturn's functions by
cumulative time, as cProfile sees the event loop's thread (the SQLite store's queries
run on its worker thread: use py-spy to see them). The second samples every thread from
outside (py-spy is not a dependency: `pip install py-spy` into the venv); the third
summarises such a collapsed-stack file: own time per function, and time spent inside
each keyturn function.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.engine.preload import dispose, prepare
from bench.engine.run import drive
from keyturn.settings import Settings


class _NoBarrier:
    def wait(self, timeout: float | None = None) -> int:  # noqa: ARG002 - the Barrier protocol
        return 0


def rotate(store: str, callers: int, seconds: float, sessions: int, profiler: str) -> None:
    pool = Settings.model_fields["db_pool_size"].default
    with tempfile.TemporaryDirectory(prefix="keyturn-hotpath-") as folder:
        target = prepare(store, sessions, Path(folder), pool)
        try:
            picks = random.Random(3).sample(range(1, sessions + 1), callers)
            profile = cProfile.Profile() if profiler == "cprofile" else None
            if profile:
                profile.enable()
            share = asyncio.run(drive(target, picks, seconds, 0.5, _NoBarrier()))
            if profile:
                profile.disable()
        finally:
            dispose(target)
    print(
        f"# {store}: {len(share.latencies_ns) / seconds:.0f} rotations/s under {profiler} "
        f"with {callers} callers; errors {share.errors or 0}"
    )
    if profile:
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(r"keyturn|refresh|tokens|sqlite|postgres", 40)
        print(out.getvalue())


def _frame_name(frame: str) -> str:
    """`function (path/to/file.py:line)` → `function (to/file.py)`, keyturn's own
    files from `keyturn/`."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    _, mine, inside = path.rpartition("keyturn/")
    short = mine + inside if mine else "/".join(path.split("/")[-2:])
    return f"{name} ({short})"


SETUP_FRAMES = ("prepare (", "dispose (")
"""Stacks of the preload and the clean-up, left out of a summary."""


def summarise(collapsed: Path, top: int = 30) -> None:
    """Own and inclusive samples per function of a py-spy raw (collapsed) file, the
    preload and the clean-up left out."""
    own: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or any(f in stack for f in SETUP_FRAMES):
            continue
        samples = int(count)
        frames = [_frame_name(f) for f in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            if "(keyturn/" in frame:
                inside[frame] += samples
    print(f"# {total} samples in all")
    print("\n## own time (leaf frames)")
    for frame, n in own.most_common(top):
        print(f"{100 * n / total:5.1f} %  {frame}")
    print("\n## inside keyturn functions (inclusive)")
    for frame, n in inside.most_common(top):
        print(f"{100 * n / total:5.1f} %  {frame}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine.hotpath")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--profiler", choices=("cprofile", "none"), default="cprofile")
    parser.add_argument("--collapsed", type=Path, help="summarise a py-spy raw file instead")
    args = parser.parse_args(argv)
    if args.collapsed:
        summarise(args.collapsed)
        return
    rotate(args.store, args.callers, args.seconds, args.sessions, args.profiler)


if __name__ == "__main__":
    main(sys.argv[1:])
