"""Does an acknowledged write survive an ext4 error? Measured on the file system alone,
with no SQLite and no keyturn in it.

    .venv/bin/python -m bench.faults.appends [--runs 8] [--out bench/results]

A thread writes records to a file on a small loop-mounted ext4 (`errors=remount-ro`,
`bench.faults.services.SmallDisk`), one `pwrite` then one `fdatasync` each, and counts
a record as acknowledged when `fdatasync` returned 0: what SQLite does for a commit
under `synchronous=FULL` (its WAL frames, then one sync). After 0.3 s the main thread
triggers an ext4 error (`SmallDisk.turn_read_only`); the writer stops at its first
failure. The file system is then unmounted and mounted again and every acknowledged
record looked for. A record found missing is an acknowledged write the file system
lost.

Shapes of record (`SHAPES`): appends of one WAL frame (4,120 bytes: a 24-byte frame
header and a 4 KiB page), of four frames at once (16,480, a commit of several rows),
of a whole block (4,096), and overwrites of records inside a file already synced at
its full size. Prints one line per run and writes `OUT/appends-<date>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.engine.report import RESULTS, machine
from bench.faults.services import SmallDisk

FRAME = 4_120
"""A SQLite WAL frame with 4 KiB pages: 24 bytes of header, then the page."""
HEADER = 32
"""A SQLite WAL file's own header, before its first frame."""


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    size: int
    """Bytes per record."""
    overwrite: bool = False
    """Records go over a file already synced at full size, instead of at its end."""


SHAPES = (
    Shape("append one frame", FRAME),
    Shape("append four frames", 4 * FRAME),
    Shape("append one block", 4_096),
    Shape("overwrite four frames", 4 * FRAME, overwrite=True),
)
SLOTS = 400
"""Records an overwriting run cycles through (a file of `SLOTS` records)."""


@dataclass(frozen=True, slots=True)
class Run:
    shape: str
    acknowledged: int
    ended_by: str
    """The writer's first failure: `write` or `sync`, with its error."""
    lost: list[int]
    """Acknowledged records missing after the file system was mounted again."""
    size_after: int


def _record(i: int, size: int) -> bytes:
    mark = i.to_bytes(8, "little")
    return (mark * (size // 8 + 1))[:size]


def _offset(shape: Shape, i: int) -> int:
    return HEADER + (i % SLOTS if shape.overwrite else i) * shape.size


def run_once(shape: Shape, before: float = 0.3) -> Run:
    disk = SmallDisk("ext4", 32)
    try:
        path = disk.path / "records"
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        start = b"H" * HEADER + (b"\0" * shape.size * SLOTS if shape.overwrite else b"")
        os.pwrite(fd, start, 0)
        os.fsync(fd)
        acknowledged: list[int] = []
        ended: list[str] = []
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                try:
                    os.pwrite(fd, _record(i, shape.size), _offset(shape, i))
                except OSError as error:
                    ended.append(f"write: {error.strerror}")
                    return
                try:
                    os.fdatasync(fd)
                except OSError as error:
                    ended.append(f"sync: {error.strerror}")
                    return
                acknowledged.append(i)
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(before)
        disk.turn_read_only()
        time.sleep(0.2)
        stop.set()
        thread.join()
        os.close(fd)
        disk.unmount()
        disk.mount()
        data = path.read_bytes()
        # An overwriting run keeps only the newest record of each slot.
        newest = acknowledged[-SLOTS:] if shape.overwrite else acknowledged
        lost = [
            i
            for i in newest
            if data[_offset(shape, i) : _offset(shape, i) + shape.size] != _record(i, shape.size)
        ]
        return Run(shape.name, len(acknowledged), ended[0] if ended else "", lost, len(data))
    finally:
        disk.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults.appends", description=__doc__)
    parser.add_argument("--runs", type=int, default=8, help="runs of each shape")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    facts = machine()
    facts["kernel"] = os.uname().release
    runs: list[Run] = []
    for shape in SHAPES:
        for _ in range(args.runs):
            done = run_once(shape)
            runs.append(done)
            print(
                f"{shape.name:24} acknowledged {done.acknowledged:5}, ended by "
                f"{done.ended_by or '-'}; lost {len(done.lost)} {done.lost[-3:]}",
                flush=True,
            )
    summary = {
        shape.name: sum(1 for r in runs if r.shape == shape.name and r.lost) for shape in SHAPES
    }
    print("# runs that lost an acknowledged record, of", args.runs, "each:", summary)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"appends-{facts['date']}.json"
    payload = {
        "machine": facts,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs_per_shape": args.runs,
        "shapes": [asdict(s) for s in SHAPES],
        "lost_runs": summary,
        "runs": [asdict(r) for r in runs],
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"# wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
