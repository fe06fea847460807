"""`bench/run --quick` still works: keyturn on SQLite is seeded, served, driven for a
few seconds and stopped, every answer checked, and the figures written where asked.

Behaviour only: no figure is compared with any speed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_quick_comparison_rotates_without_errors_and_writes_its_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = list(tmp_path.glob("compare-*.json"))
    assert len(written) == 1
    payload = json.loads(written[0].read_text())
    [line] = payload["results"]
    assert (line["system"], line["store"], line["workers"]) == ("keyturn", "sqlite", 1)
    assert line["concurrency"] == 16
    assert line["errors"] == {}
    assert line["rotations"] > 0
    assert payload["failures"] == {}
    assert payload["limits"] == {}
