"""`python -m bench.faults.appends` measures what it says: a writer that acknowledges
records until the ext4 error stops it, and the records looked for after the file system
is mounted again. Behaviour only: whether a record was lost is the figure, never
asserted."""

from __future__ import annotations

import pytest
from bench.faults.appends import SHAPES, Shape, run_once
from bench.faults.services import can_mount

from support.availability import missing

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_a_run_acknowledges_records_until_the_error_and_looks_for_each(shape: Shape) -> None:
    why = can_mount("ext4")
    if why is not None:
        missing("an ext4 mount", "this machine", why)
    done = run_once(shape, before=0.1)
    assert done.shape == shape.name
    assert done.acknowledged > 0
    # The writer stopped at the fault, on its write or on its sync.
    assert done.ended_by.startswith(("write:", "sync:")), done.ended_by
    assert all(0 <= i < done.acknowledged for i in done.lost)
    assert done.size_after > 0
